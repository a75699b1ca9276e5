// cs_requant: exact fixed-point requantizer (combinational).
//
//   q = sat( relu?( round(acc / 2^SHIFT) ) )        SHIFT < 0: exact left shift by -SHIFT
//
// acc    : IN_W-bit two's complement accumulator.
// q      : OUT_W-bit output code, two's complement if OUT_SIGNED else unsigned.
// MODE   : rounding of the dropped bits (QONNX names)
//          0 ROUND (half to even)   1 FLOOR   2 CEIL   3 ROUND_TO_ZERO
//          4 UP (away from zero)    5 HALF_UP (half away from zero)   6 HALF_DOWN (half toward zero)
// RELU   : negative results become 0.
// NARROW : the most negative signed code (or the largest unsigned code) is excluded.
// SAT_LO / SAT_HI : 0 disables the lower/upper saturation logic when the caller has proved the
//          value can never leave the range (the generator computes this from exact bounds).
// Bit-exact with codesign.rtl.ir.Requant.apply (and QONNX Quant on a power-of-two scale).
module cs_requant #(
    parameter integer IN_W       = 16,
    parameter integer OUT_W      = 8,
    parameter integer OUT_SIGNED = 0,
    parameter integer NARROW     = 0,
    parameter integer SHIFT      = 0,
    parameter integer MODE       = 0,
    parameter integer RELU       = 0,
    parameter integer SAT_LO     = 1,
    parameter integer SAT_HI     = 1
) (
    input  wire signed [IN_W-1:0] acc,
    output wire        [OUT_W-1:0] q
);
    localparam integer LS  = (SHIFT < 0) ? -SHIFT : 0;
    localparam integer RS  = (SHIFT > 0) ? SHIFT : 0;
    localparam integer W0  = (IN_W + LS > RS + 1) ? IN_W + LS : RS + 1;
    localparam integer WW  = ((W0 > OUT_W + 1) ? W0 : OUT_W + 1) + 2;   // working width

    wire signed [WW-1:0] accx = {{(WW-IN_W){acc[IN_W-1]}}, acc};
    wire signed [WW-1:0] r;                       // rounded value, exact

    generate
        if (RS == 0) begin : g_noshift
            assign r = accx <<< LS;
        end else begin : g_shift
            wire signed [WW-1:0] fl = accx >>> RS;      // floor(acc / 2^RS)
            /* verilator lint_off UNUSEDSIGNAL */
            wire [RS-1:0] rem  = accx[RS-1:0];          // dropped bits
            wire          neg  = accx[WW-1];
            wire          half = rem[RS-1];
            wire          any  = |rem;
            wire          odd  = fl[0];
            wire          below;                        // dropped bits below the half bit non-zero
            /* verilator lint_on UNUSEDSIGNAL */
            if (RS == 1) begin : g_rs1
                assign below = 1'b0;
            end else begin : g_rsn
                assign below = |rem[RS-2:0];
            end
            wire up;
            if (MODE == 1)      begin : g_floor assign up = 1'b0;                   end
            else if (MODE == 2) begin : g_ceil  assign up = any;                    end
            else if (MODE == 3) begin : g_rtz   assign up = neg & any;              end
            else if (MODE == 4) begin : g_up    assign up = ~neg & any;             end
            else if (MODE == 5) begin : g_hup   assign up = half & (below | ~neg);  end
            else if (MODE == 6) begin : g_hdn   assign up = half & (below | neg);   end
            else                begin : g_even  assign up = half & (below | odd);   end
            assign r = fl + {{(WW-1){1'b0}}, up};
        end
    endgenerate

    // ---- relu + saturation on the exact value r -------------------------------------------
    wire r_neg = r[WW-1];
    wire too_hi, too_lo, at_edge;
    wire [OUT_W-1:0] lo_code, hi_code;
    generate
        if (OUT_SIGNED != 0) begin : g_signed
            // fits in OUT_W signed bits iff r[WW-1:OUT_W-1] are all equal
            wire [WW-OUT_W:0] top = r[WW-1:OUT_W-1];
            assign too_hi  = (SAT_HI != 0) && !r_neg && (|top);
            assign too_lo  = (SAT_LO != 0) && r_neg && !(&top);
            assign at_edge = (SAT_LO != 0) && (NARROW != 0) && (&top) && (r[OUT_W-2:0] == {(OUT_W-1){1'b0}});
            assign hi_code = {1'b0, {(OUT_W-1){1'b1}}};
            assign lo_code = (RELU != 0) ? {OUT_W{1'b0}} :
                             (NARROW != 0) ? {1'b1, {(OUT_W-2){1'b0}}, 1'b1} : {1'b1, {(OUT_W-1){1'b0}}};
        end else begin : g_unsigned
            wire [WW-OUT_W-2:0] top = r[WW-2:OUT_W];
            assign too_hi  = (SAT_HI != 0) && !r_neg && ((|top) || ((NARROW != 0) && (&r[OUT_W-1:0])));
            assign too_lo  = (SAT_LO != 0) && r_neg;
            assign at_edge = 1'b0;
            assign hi_code = (NARROW != 0) ? {{(OUT_W-1){1'b1}}, 1'b0} : {OUT_W{1'b1}};
            assign lo_code = {OUT_W{1'b0}};
        end
    endgenerate
    wire relu_zero = (RELU != 0) && r_neg;
    assign q = relu_zero ? {OUT_W{1'b0}} :
               too_hi    ? hi_code :
               (too_lo || at_edge) ? lo_code :
               r[OUT_W-1:0];
endmodule
