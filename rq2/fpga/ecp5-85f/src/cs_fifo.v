// cs_fifo: synchronous AXI-Stream FIFO (DEPTH entries of W bits), the storage of a residual skip path.
//
// s_tready = not full and m_tvalid = not empty are registers (no combinational path from s_tvalid
// to m_tvalid or from m_tready to s_tready): a word written at clock edge t is readable from t+1.
// A full FIFO accepts no word even in a cycle where one leaves (size DEPTH accordingly).
// Synchronous active-high reset. DEPTH >= 2.
module cs_fifo #(
    parameter integer W     = 8,
    parameter integer DEPTH = 2
) (
    input  wire         clk,
    input  wire         rst,
    input  wire [W-1:0] s_tdata,
    input  wire         s_tvalid,
    output wire         s_tready,
    output wire [W-1:0] m_tdata,
    output wire         m_tvalid,
    input  wire         m_tready
);
    localparam integer AW = (DEPTH > 2) ? $clog2(DEPTH) : 1;
    localparam [AW-1:0] LAST = DEPTH[AW-1:0] - 1'b1;

    reg [W-1:0]  mem [0:DEPTH-1];
    reg [AW-1:0] wp, rp;
    reg          full_r, empty_r;

    wire push = s_tvalid && !full_r;
    wire pop  = m_tready && !empty_r;
    wire [AW-1:0] wp_n = (wp == LAST) ? {AW{1'b0}} : wp + 1'b1;
    wire [AW-1:0] rp_n = (rp == LAST) ? {AW{1'b0}} : rp + 1'b1;

    assign s_tready = !full_r;
    assign m_tvalid = !empty_r;
    assign m_tdata  = mem[rp];

    always @(posedge clk) begin
        if (rst) begin
            wp      <= {AW{1'b0}};
            rp      <= {AW{1'b0}};
            full_r  <= 1'b0;
            empty_r <= 1'b1;
        end else begin
            if (push) wp <= wp_n;
            if (pop)  rp <= rp_n;
            if (push && !pop) begin
                empty_r <= 1'b0;
                full_r  <= (wp_n == rp);
            end else if (pop && !push) begin
                full_r  <= 1'b0;
                empty_r <= (rp_n == wp);
            end
        end
    end

    always @(posedge clk)
        if (push) mem[wp] <= s_tdata;
endmodule
