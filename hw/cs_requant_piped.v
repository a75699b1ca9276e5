// cs_requant_piped: the requantizer of cs_requant.v cut into register stages, for deep pipelines.
//
//   q = sat( relu?( round(acc / 2^SHIFT) ) )     (same parameters and result as cs_requant)
//
// cs_requant does the rounding (an OR over the dropped bits, then a carry chain) and the saturation
// (an OR over the top bits, then a mux) in one combinational path. Here the rounded value is
// registered before the saturation (STAGES >= 1), and with STAGES = 2 the floor and the round-up bit
// are registered too, so each cycle holds one of: dropped-bit logic, the +1 carry chain, the
// saturation. Latency = STAGES cycles; the saturation after the last register is combinational
// (the caller's output register follows it). The registers advance when `en` is high.
// Bit-exact with cs_requant for every parameter set (tests/test_rtl_requant_piped.py).
module cs_requant_piped #(
    parameter integer IN_W       = 16,
    parameter integer OUT_W      = 8,
    parameter integer OUT_SIGNED = 0,
    parameter integer NARROW     = 0,
    parameter integer SHIFT      = 0,
    parameter integer MODE       = 0,
    parameter integer RELU       = 0,
    parameter integer SAT_LO     = 1,
    parameter integer SAT_HI     = 1,
    parameter integer STAGES     = 1
) (
    input  wire clk,
    input  wire en,
    input  wire signed [IN_W-1:0] acc,
    output wire        [OUT_W-1:0] q
);
    localparam integer LS  = (SHIFT < 0) ? -SHIFT : 0;
    localparam integer RS  = (SHIFT > 0) ? SHIFT : 0;
    localparam integer W0  = (IN_W + LS > RS + 1) ? IN_W + LS : RS + 1;
    localparam integer WW  = ((W0 > OUT_W + 1) ? W0 : OUT_W + 1) + 2;   // working width

    wire signed [WW-1:0] accx = {{(WW-IN_W){acc[IN_W-1]}}, acc};
    wire signed [WW-1:0] fl;                      // floor(acc / 2^RS) (or acc << LS)
    wire up;                                      // 1: round up

    generate
        if (RS == 0) begin : g_noshift
            assign fl = accx <<< LS;
            assign up = 1'b0;
        end else begin : g_shift
            assign fl = accx >>> RS;
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
            if (MODE == 1)      begin : g_floor assign up = 1'b0;                   end
            else if (MODE == 2) begin : g_ceil  assign up = any;                    end
            else if (MODE == 3) begin : g_rtz   assign up = neg & any;              end
            else if (MODE == 4) begin : g_up    assign up = ~neg & any;             end
            else if (MODE == 5) begin : g_hup   assign up = half & (below | ~neg);  end
            else if (MODE == 6) begin : g_hdn   assign up = half & (below | neg);   end
            else                begin : g_even  assign up = half & (below | odd);   end
        end
    endgenerate

    wire signed [WW-1:0] fl_s;                    // floor and round-up bit as the adder sees them
    wire up_s;
    generate
        if (STAGES >= 2) begin : g_cut_round
            reg signed [WW-1:0] fl_r;
            reg up_r;
            always @(posedge clk) if (en) begin fl_r <= fl; up_r <= up; end
            assign fl_s = fl_r;
            assign up_s = up_r;
        end else begin : g_no_cut_round
            assign fl_s = fl;
            assign up_s = up;
        end
    endgenerate

    reg signed [WW-1:0] r;                        // rounded value, exact, registered
    always @(posedge clk) if (en) r <= fl_s + {{(WW-1){1'b0}}, up_s};

    // saturation (and relu) of the rounded value: cs_requant with no shift is exactly that
    cs_requant #(.IN_W(WW), .OUT_W(OUT_W), .OUT_SIGNED(OUT_SIGNED), .NARROW(NARROW), .SHIFT(0), .MODE(MODE),
                 .RELU(RELU), .SAT_LO(SAT_LO), .SAT_HI(SAT_HI)) u_sat (.acc(r), .q(q));
endmodule
