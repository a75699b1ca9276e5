// Deliberately too big for an iCE40 UP5K: a 96-stage, 64-bit delay line (6,144 FFs) that follows
// the interface.json contract (latency 96, ii 1, no backpressure support needed: tready tied high).
module big_dut #(parameter integer STAGES = 96) (
    input  wire        clk,
    input  wire        rst,
    input  wire [63:0] s_axis_tdata,
    input  wire        s_axis_tvalid,
    output wire        s_axis_tready,
    output wire [63:0] m_axis_tdata,
    output wire        m_axis_tvalid,
    input  wire        m_axis_tready
);
    reg [63:0] d [0:STAGES-1];
    reg [STAGES-1:0] v;
    integer k;
    assign s_axis_tready = m_axis_tready;
    always @(posedge clk) begin
        if (m_axis_tready) begin
            d[0] <= s_axis_tdata ^ {d[STAGES-1][31:0], d[STAGES-1][63:32]};
            v <= rst ? {STAGES{1'b0}} : {v[STAGES-2:0], s_axis_tvalid};
            for (k = 1; k < STAGES; k = k + 1)
                d[k] <= d[k-1];
        end
    end
    assign m_axis_tdata = d[STAGES-1];
    assign m_axis_tvalid = v[STAGES-1];
endmodule
