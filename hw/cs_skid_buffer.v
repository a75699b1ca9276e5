// cs_skid_buffer: AXI-Stream register slice (two-entry skid buffer).
//
// Registers both the forward path (tdata/tvalid) and the backward path (tready) so that a long
// combinational ready chain is cut. Full throughput (one beat per cycle), no combinational path
// from m_tready to s_tready or from s_tvalid to m_tvalid. Synchronous active-high reset.
module cs_skid_buffer #(
    parameter integer W = 8
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
    reg [W-1:0] data_r, skid_r;
    reg         valid_r, skid_valid_r;

    assign s_tready = !skid_valid_r;
    assign m_tvalid = valid_r;
    assign m_tdata  = data_r;

    always @(posedge clk) begin
        if (rst) begin
            valid_r      <= 1'b0;
            skid_valid_r <= 1'b0;
        end else begin
            if (!valid_r || m_tready) begin
                // output register free (or being emptied): refill from skid, else from input
                if (skid_valid_r) begin
                    valid_r      <= 1'b1;
                    skid_valid_r <= 1'b0;
                end else begin
                    valid_r <= s_tvalid;
                end
            end else if (s_tvalid && !skid_valid_r) begin
                skid_valid_r <= 1'b1;       // output stalled: park the accepted beat
            end
        end
    end

    always @(posedge clk) begin
        if (!valid_r || m_tready) begin
            data_r <= skid_valid_r ? skid_r : s_tdata;
        end
        if (valid_r && !m_tready && s_tvalid && !skid_valid_r) begin
            skid_r <= s_tdata;
        end
    end
endmodule
