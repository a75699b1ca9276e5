// cs_credit_fifo: credit-based flow control around a valid-only pipeline of LATENCY cycles.
//
// The pipeline in front of this module never stalls: a beat taken at its input (p_take) comes out
// (p_tvalid) exactly LATENCY cycles later and is written into a FIFO of DEPTH = LATENCY + 2 entries.
// A credit counter counts the beats taken and not yet read out of the FIFO (in flight + stored);
// s_tready = counter < DEPTH after this edge, a register, so every beat taken has a free FIFO entry
// when it arrives and the consumer's m_tready never reaches the datapath. With m_tready always high the
// counter settles at LATENCY + 1 and s_tready stays high (II 1): a beat holds its credit for
// LATENCY + 1 edges (pipeline + FIFO), and s_tready cannot see the read in the same cycle (+1).
// Latency through the FIFO: 1 cycle. Synchronous active-high reset; s_tready is low during reset.
// LATENCY >= 0.
//
// Built for deep pipelines at 200 MHz on ECP5: both counts (credits, FIFO entries) are thermometer
// codes (bit k: more than k), so each flag the next cycle needs (s_tready, m_tvalid) is one bit of a
// shift by one place, not a binary add followed by a compare; the FIFO has no full logic (the credits
// rule it out) and its pointers wrap at a power of two (no compare with the last address).
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
    localparam integer AW = $clog2(DEPTH);       // DEPTH >= 2: AW >= 1; pointers wrap at 2^AW >= DEPTH

    // FIFO: a beat from the pipeline is always written (a credit reserved its entry)
    reg [W-1:0]     mem [0:(1 << AW) - 1];
    reg [AW-1:0]    wp, rp;
    reg [DEPTH-1:0] held;                         // entries held, thermometer: held[k] = more than k
    wire push = p_tvalid;
    wire pop  = m_tready && held[0];
    assign m_tvalid = held[0];
    assign m_tdata  = mem[rp];

    // credits: beats taken and not yet read out (in flight + held), thermometer
    reg [DEPTH-1:0] used;
    reg             ready_r;
    wire [DEPTH-1:0] used_n = (p_take && !pop) ? {used[DEPTH-2:0], 1'b1} :
                              (pop && !p_take) ? {1'b0, used[DEPTH-1:1]} : used;
    assign s_tready = ready_r;

    always @(posedge clk) begin
        if (rst) begin
            wp      <= {AW{1'b0}};
            rp      <= {AW{1'b0}};
            held    <= {DEPTH{1'b0}};
            used    <= {DEPTH{1'b0}};
            ready_r <= 1'b0;
        end else begin
            if (push) wp <= wp + 1'b1;
            if (pop)  rp <= rp + 1'b1;
            if (push && !pop)      held <= {held[DEPTH-2:0], 1'b1};
            else if (pop && !push) held <= {1'b0, held[DEPTH-1:1]};
            used    <= used_n;
            ready_r <= !used_n[DEPTH-1];         // fewer than DEPTH after this edge
        end
    end

    always @(posedge clk)
        if (push) mem[wp] <= p_tdata;
endmodule
