// Hand-written stand-in accelerator for the fpga tests (follows docs/contracts.md interface.json).
// y[j] = sum_i W[j][i] * x[i] + B[j]; 4 signed int8 inputs, 3 signed 18-bit outputs.
// Two pipeline stages, global stall when the output is not accepted: latency 2, ii 1.
// Weights/biases: see reference.json (used by the tests as the golden model).
module dense_mac #(parameter signed [7:0] W0 = 0, W1 = 0, W2 = 0, W3 = 0,
                   parameter signed [17:0] B = 0) (
    input  wire              clk,
    input  wire              en,
    input  wire signed [7:0] x0, x1, x2, x3,
    output reg  signed [17:0] y
);
    reg signed [15:0] p0, p1, p2, p3;
    always @(posedge clk) if (en) begin
        p0 <= x0 * W0; p1 <= x1 * W1; p2 <= x2 * W2; p3 <= x3 * W3;
        y  <= p0 + p1 + p2 + p3 + B;
    end
endmodule

module dense_dut (
    input  wire        clk,
    input  wire        rst,
    input  wire [31:0] s_axis_tdata,
    input  wire        s_axis_tvalid,
    output wire        s_axis_tready,
    output wire [53:0] m_axis_tdata,
    output wire        m_axis_tvalid,
    input  wire        m_axis_tready
);
    reg v1, v2;
    wire en = !v2 || m_axis_tready;
    assign s_axis_tready = en;
    assign m_axis_tvalid = v2;
    always @(posedge clk) begin
        if (rst) begin v1 <= 1'b0; v2 <= 1'b0; end
        else if (en) begin v1 <= s_axis_tvalid; v2 <= v1; end
    end
    wire signed [7:0] x0 = s_axis_tdata[7:0],   x1 = s_axis_tdata[15:8],
                      x2 = s_axis_tdata[23:16], x3 = s_axis_tdata[31:24];
    dense_mac #(.W0(8'sd3),  .W1(-8'sd5), .W2(8'sd7),  .W3(-8'sd1), .B(18'sd100))
        u0 (.clk(clk), .en(en), .x0(x0), .x1(x1), .x2(x2), .x3(x3), .y(m_axis_tdata[17:0]));
    dense_mac #(.W0(-8'sd2), .W1(8'sd11), .W2(8'sd0),  .W3(8'sd4),  .B(-18'sd50))
        u1 (.clk(clk), .en(en), .x0(x0), .x1(x1), .x2(x2), .x3(x3), .y(m_axis_tdata[35:18]));
    dense_mac #(.W0(8'sd1),  .W1(8'sd1),  .W2(-8'sd9), .W3(8'sd6),  .B(18'sd0))
        u2 (.clk(clk), .en(en), .x0(x0), .x1(x1), .x2(x2), .x3(x3), .y(m_axis_tdata[53:36]));
endmodule
