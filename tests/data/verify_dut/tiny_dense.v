// Hand-written test DUT for codesign.verify: a 4-4-3 integer MLP behind AXI-Stream.
// fc1: acc = W1*x + b1; y1 = clip(round_half_even(acc / 2^5), 0, 15)   (ReLU, 4-bit unsigned)
// fc2: y2 = W2*y1 + b2                                                  (10-bit signed)
// Two register stages (latency 2, II 1) with a global stall when the output is not accepted.
module tiny_fc1 (
    input  wire signed [7:0] x0, x1, x2, x3,
    output wire        [3:0] y0, y1, y2, y3
);
    wire signed [15:0] a0 =  1*x0 - 2*x1 + 3*x2 + 0*x3 + 16'sd4;
    wire signed [15:0] a1 =  2*x0 + 1*x1 - 1*x2 + 1*x3 - 16'sd8;
    wire signed [15:0] a2 = -3*x0 + 0*x1 + 2*x2 + 2*x3 + 16'sd0;
    wire signed [15:0] a3 =  1*x0 + 1*x1 + 1*x2 - 1*x3 + 16'sd3;
    tiny_requant r0 (.acc(a0), .y(y0));
    tiny_requant r1 (.acc(a1), .y(y1));
    tiny_requant r2 (.acc(a2), .y(y2));
    tiny_requant r3 (.acc(a3), .y(y3));
endmodule

module tiny_requant (
    input  wire signed [15:0] acc,
    output wire        [3:0]  y
);
    wire signed [15:0] q   = acc >>> 5;          // floor(acc / 32)
    wire        [4:0]  rem = acc[4:0];
    // round half to even
    wire               up  = (rem > 5'd16) || (rem == 5'd16 && q[0]); // ROUNDING
    wire signed [15:0] r   = q + {15'd0, up};
    assign y = (r < 0) ? 4'd0 : (r > 15) ? 4'd15 : r[3:0];
endmodule

module tiny_top (
    input  wire        clk,
    input  wire        rst,
    input  wire [31:0] s_axis_tdata,
    input  wire        s_axis_tvalid,
    output wire        s_axis_tready,
    output wire [29:0] m_axis_tdata,
    output wire        m_axis_tvalid,
    input  wire        m_axis_tready,
    output wire [15:0] dbg_fc1_tdata,
    output wire        dbg_fc1_tvalid
);
    reg        v1, v2;
    reg [15:0] h;          // fc1 output, 4 x 4 bits
    reg [29:0] o;          // fc2 output, 3 x 10 bits
    wire en = !v2 || m_axis_tready;
    assign s_axis_tready  = en;
    assign m_axis_tvalid  = v2;
    assign m_axis_tdata   = o;
    assign dbg_fc1_tdata  = h;
    assign dbg_fc1_tvalid = v1 && en;

    wire [3:0] y0, y1, y2, y3;
    tiny_fc1 fc1 (.x0(s_axis_tdata[7:0]), .x1(s_axis_tdata[15:8]), .x2(s_axis_tdata[23:16]),
                  .x3(s_axis_tdata[31:24]), .y0(y0), .y1(y1), .y2(y2), .y3(y3));

    wire signed [9:0] h0 = {6'd0, h[3:0]};
    wire signed [9:0] h1 = {6'd0, h[7:4]};
    wire signed [9:0] h2 = {6'd0, h[11:8]};
    wire signed [9:0] h3 = {6'd0, h[15:12]};
    wire signed [9:0] z0 =  h0 - h1 + 2*h2         + 10'sd0;
    wire signed [9:0] z1 =       3*h1 - 2*h2 + h3  + 10'sd5;
    wire signed [9:0] z2 = -h0 + h1 + h2 + h3      - 10'sd3;

    always @(posedge clk) begin
        if (rst) begin
            v1 <= 1'b0;
            v2 <= 1'b0;
            h  <= 16'd0;
            o  <= 30'd0;
        end else if (en) begin
            v1 <= s_axis_tvalid;
            v2 <= v1;
            if (s_axis_tvalid) h <= {y3, y2, y1, y0};
            if (v1) o <= {z2, z1, z0};
        end
    end
endmodule
