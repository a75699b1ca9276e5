// cs_credit_fifo: credit-based flow control around a valid-only pipeline of LATENCY cycles.
//
// The pipeline in front of this module never stalls: a beat taken at its input (p_take) comes out
// (p_tvalid) exactly LATENCY cycles later and is written into a FIFO of DEPTH = LATENCY + 2 entries.
// A credit counter counts the beats taken and not yet read out of the FIFO (in flight + stored);
// s_tready = counter < DEPTH after this edge, a register, so every beat taken has a free FIFO entry
// when it arrives and the consumer's m_tready never reaches the datapath. With m_tready always high the
// counter settles at LATENCY + 1 and s_tready stays high (II 1): a beat holds its credit for
// LATENCY + 1 edges (pipeline + FIFO), and s_tready cannot see the read in the same cycle (+1).
// Latency through the FIFO: 1 cycle (cs_fifo). Synchronous active-high reset; s_tready is low during
// reset. LATENCY >= 0.
module cs_credit_fifo #(
    parameter integer W       = 8,
    parameter integer LATENCY = 1
) (
    input  wire         clk,
    input  wire         rst,
    output wire         s_tready,   // registered: a credit is free
    input  wire         p_take,     // a beat enters the pipeline (s_tvalid && s_tready)
    input  wire [W-1:0] p_tdata,    // pipeline output, LATENCY cycles after p_take
    input  wire         p_tvalid,
    output wire [W-1:0] m_tdata,
    output wire         m_tvalid,
    input  wire         m_tready
);
    localparam integer DEPTH = LATENCY + 2;
    localparam integer CW = $clog2(DEPTH + 1);
    localparam [CW-1:0] FULL = DEPTH[CW-1:0];

    reg  [CW-1:0] used;          // beats taken and not yet read out
    reg           ready_r;
    wire          pop = m_tvalid && m_tready;
    wire [CW-1:0] used_n = used + {{(CW-1){1'b0}}, p_take} - {{(CW-1){1'b0}}, pop};

    always @(posedge clk) begin
        if (rst) begin
            used    <= {CW{1'b0}};
            ready_r <= 1'b0;
        end else begin
            used    <= used_n;
            ready_r <= used_n != FULL;
        end
    end
    assign s_tready = ready_r;

    wire fifo_s_tready;
    wire _unused_fifo_s_tready = fifo_s_tready;  // never full when a beat arrives (credits)
    cs_fifo #(.W(W), .DEPTH(DEPTH)) u_fifo (
        .clk(clk), .rst(rst),
        .s_tdata(p_tdata), .s_tvalid(p_tvalid), .s_tready(fifo_s_tready),
        .m_tdata(m_tdata), .m_tvalid(m_tvalid), .m_tready(m_tready));
endmodule
