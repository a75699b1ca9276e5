// cs_window: line buffer + sliding window of a pixel stream (AXI-Stream, one pixel of PW bits per beat).
//
// The input is an HP x WP image (already padded, see cs_pad.v) in raster order (row-major; a 1-D
// signal is HP = 1, KH = 1). The line buffer holds the last KH-1 rows: one memory of WP words, word c
// = the pixels of column c in the KH-1 rows above (a column stack, shifted on every write), so each
// input pixel reads and writes one word. The KH x KW window is a shift register of KW column stacks.
// After the pixel at (r, c) the window covers rows r-KH+1..r and columns c-KW+1..c; it is emitted
// only at the positions of the strided output grid: r = KH-1 + i*SH and c = KW-1 + j*SW (outside the
// image this never matches: the grid ends where the floor of the output size says).
//
// Output beat: the KH*KW pixels in (kh, kw) raster order, pixel (kh, kw) at
// m_tdata[(kh*KW + kw)*PW +: PW] (kh = 0 the top row, kw = 0 the left column), i.e. the C-order
// flattening of the (KH, KW, pixel) window. The output is a register: s_tready = !m_tvalid || m_tready
// (one pixel per cycle at full throughput, latency 1 from the pixel that completes a window).
// Synchronous active-high reset.
module cs_window #(
    parameter integer PW = 8,
    parameter integer HP = 4,
    parameter integer WP = 4,
    parameter integer KH = 3,
    parameter integer KW = 3,
    parameter integer SH = 1,
    parameter integer SW = 1
) (
    input  wire             clk,
    input  wire             rst,
    input  wire [PW-1:0]    s_tdata,
    input  wire             s_tvalid,
    output wire             s_tready,
    output wire [KH*KW*PW-1:0] m_tdata,
    output wire             m_tvalid,
    input  wire             m_tready
);
    localparam integer RW = $clog2(HP + SH + 1);   // counters also hold the next grid row / column
    localparam integer CW = $clog2(WP + SW + 1);
    localparam integer CSW = KH * PW;               // one column stack
    localparam integer AW = (WP > 1) ? $clog2(WP) : 1;   // line buffer address
    localparam [RW-1:0] R_LAST = HP[RW-1:0] - 1'b1;
    localparam [CW-1:0] C_LAST = WP[CW-1:0] - 1'b1;
    localparam [RW-1:0] R_GRID0 = KH[RW-1:0] - 1'b1;
    localparam [CW-1:0] C_GRID0 = KW[CW-1:0] - 1'b1;
    localparam [RW-1:0] R_STEP = SH[RW-1:0];
    localparam [CW-1:0] C_STEP = SW[CW-1:0];

    reg [RW-1:0] r, er;   // current row / next row of the output grid
    reg [CW-1:0] c, ec;   // current column / next column of the output grid
    reg          ov;
    reg [KW*CSW-1:0] win; // KW column stacks, the newest (column c) in the top CSW bits

    wire fire = s_tvalid && s_tready;
    wire emit = (r == er) && (c == ec);
    wire [CSW-1:0] col;   // the column stack of the current pixel: row r in the low PW bits, row r-k at k*PW

    assign s_tready = !ov || m_tready;
    assign m_tvalid = ov;

    generate
        if (KH > 1) begin : g_lb
            reg [(KH-1)*PW-1:0] lb [0:WP-1];   // line buffer: rows r-1..r-KH+1 of every column
            assign col = {lb[c[AW-1:0]], s_tdata};
            always @(posedge clk)
                if (fire) lb[c[AW-1:0]] <= col[(KH-1)*PW-1:0];
        end else begin : g_nolb
            assign col = s_tdata;
        end
        if (KW > 1) begin : g_shift
            always @(posedge clk)
                if (fire) win <= {col, win[KW*CSW-1:CSW]};
        end else begin : g_noshift
            always @(posedge clk)
                if (fire) win <= col;
        end
    endgenerate

    // (kh, kw) raster order: column stack kw holds row kh at position KH-1-kh
    genvar kh, kw;
    generate
        for (kh = 0; kh < KH; kh = kh + 1) begin : g_row
            for (kw = 0; kw < KW; kw = kw + 1) begin : g_col
                assign m_tdata[(kh*KW + kw)*PW +: PW] = win[kw*CSW + (KH-1-kh)*PW +: PW];
            end
        end
    endgenerate

    always @(posedge clk) begin
        if (rst) begin
            r  <= {RW{1'b0}};
            c  <= {CW{1'b0}};
            er <= R_GRID0;
            ec <= C_GRID0;
            ov <= 1'b0;
        end else begin
            if (fire) begin
                ov <= emit;
                if (c == C_LAST) begin
                    c  <= {CW{1'b0}};
                    ec <= C_GRID0;
                    if (r == R_LAST) begin
                        r  <= {RW{1'b0}};
                        er <= R_GRID0;
                    end else begin
                        r <= r + 1'b1;
                        if (r == er) er <= er + R_STEP;
                    end
                end else begin
                    c <= c + 1'b1;
                    if (c == ec) ec <= ec + C_STEP;
                end
            end else if (m_tready) begin
                ov <= 1'b0;
            end
        end
    end
endmodule
