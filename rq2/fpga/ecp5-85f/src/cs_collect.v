// cs_collect: pixel stream -> whole vector (AXI-Stream). Collects N beats of PW bits; beat k lands at
// m_tdata[k*PW +: PW] (the first beat in the LSBs), so a feature map streamed in raster order with
// its channels packed per beat comes out as the C-order (H, W, C) vector. The vector is a register,
// valid the cycle after its last beat; s_tready = !m_tvalid || m_tready (a new vector's first beat is
// taken in the cycle the previous vector leaves: no bubble). Synchronous active-high reset.
module cs_collect #(
    parameter integer PW = 8,
    parameter integer N  = 4
) (
    input  wire            clk,
    input  wire            rst,
    input  wire [PW-1:0]   s_tdata,
    input  wire            s_tvalid,
    output wire            s_tready,
    output wire [N*PW-1:0] m_tdata,
    output wire            m_tvalid,
    input  wire            m_tready
);
    localparam integer NW = (N > 1) ? $clog2(N) : 1;
    localparam [NW-1:0] LAST = N[NW-1:0] - 1'b1;

    reg [N*PW-1:0] data;
    reg [NW-1:0]   cnt;
    reg            ov;
    wire fire = s_tvalid && s_tready;

    assign s_tready = !ov || m_tready;
    assign m_tvalid = ov;
    assign m_tdata  = data;

    generate
        if (N > 1) begin : g_shift
            always @(posedge clk)
                if (fire) data <= {s_tdata, data[N*PW-1:PW]};
        end else begin : g_one
            always @(posedge clk)
                if (fire) data <= s_tdata;
        end
    endgenerate

    always @(posedge clk) begin
        if (rst) begin
            cnt <= {NW{1'b0}};
            ov  <= 1'b0;
        end else if (fire) begin
            cnt <= (cnt == LAST) ? {NW{1'b0}} : cnt + 1'b1;
            ov  <= (cnt == LAST);
        end else if (m_tready) begin
            ov <= 1'b0;
        end
    end
endmodule
