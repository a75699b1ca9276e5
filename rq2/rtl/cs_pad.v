// cs_pad: zero-padding inserter of a pixel stream (AXI-Stream, one pixel of PW bits per beat).
//
// The input is an H x W image in raster order (row-major; a 1-D signal is H = 1). The output is the
// padded (PT + H + PB) x (PL + W + PR) image in raster order: at a padding position the module emits
// FILL (tvalid high) without taking an input beat (s_tready low: the input stalls); in_img the image
// it passes the input beat through combinationally (tvalid, tready and tdata, no register, no latency).
// Synchronous active-high reset.
module cs_pad #(
    parameter integer PW   = 8,
    parameter integer H    = 4,
    parameter integer W    = 4,
    parameter integer PT   = 1,
    parameter integer PB   = 1,
    parameter integer PL   = 1,
    parameter integer PR   = 1,
    parameter [PW-1:0] FILL = {PW{1'b0}}
) (
    input  wire          clk,
    input  wire          rst,
    input  wire [PW-1:0] s_tdata,
    input  wire          s_tvalid,
    output wire          s_tready,
    output wire [PW-1:0] m_tdata,
    output wire          m_tvalid,
    input  wire          m_tready
);
    localparam integer HP = PT + H + PB;
    localparam integer WP = PL + W + PR;
    localparam integer RW = $clog2(HP + 1);
    localparam integer CW = $clog2(WP + 1);
    localparam [RW-1:0] R_FIRST = PT[RW-1:0];
    localparam [RW-1:0] R_IMG   = H[RW-1:0];
    localparam [RW-1:0] R_LAST  = HP[RW-1:0] - 1'b1;
    localparam [CW-1:0] C_FIRST = PL[CW-1:0];
    localparam [CW-1:0] C_IMG   = W[CW-1:0];
    localparam [CW-1:0] C_LAST  = WP[CW-1:0] - 1'b1;

    reg [RW-1:0] r;   // position in the padded image
    reg [CW-1:0] c;
    wire [RW-1:0] ri = r - R_FIRST;   // row in the image; wraps to >= H above it (2^RW > PT + H)
    wire [CW-1:0] ci = c - C_FIRST;
    wire in_img = (ri < R_IMG) && (ci < C_IMG);

    assign m_tvalid = in_img ? s_tvalid : 1'b1;
    assign m_tdata  = in_img ? s_tdata : FILL;
    assign s_tready = in_img && m_tready;

    always @(posedge clk) begin
        if (rst) begin
            r <= {RW{1'b0}};
            c <= {CW{1'b0}};
        end else if (m_tvalid && m_tready) begin
            if (c == C_LAST) begin
                c <= {CW{1'b0}};
                r <= (r == R_LAST) ? {RW{1'b0}} : r + 1'b1;
            end else begin
                c <= c + 1'b1;
            end
        end
    end
endmodule
