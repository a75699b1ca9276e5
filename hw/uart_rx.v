// UART receiver: 8 data bits, no parity, 1 stop bit (8N1), LSB first, line idles high.
// CLKS_PER_BIT = clock frequency / baud rate (>= 4). The line is synchronised with two flip-flops,
// bits are sampled in the middle of each bit period. `valid` pulses for one clock with `data`;
// a byte whose stop bit reads 0 is dropped and pulses `frame_err` instead.
module uart_rx #(parameter integer CLKS_PER_BIT = 217) (
    input  wire       clk,
    input  wire       rst,
    input  wire       rx,
    output reg  [7:0] data,
    output reg        valid,
    output reg        frame_err
);
    localparam integer CW = $clog2(CLKS_PER_BIT + 1);
    localparam [CW-1:0] LAST = CLKS_PER_BIT - 1;
    localparam [CW-1:0] HALF = (CLKS_PER_BIT - 1) / 2;
    localparam [1:0] IDLE = 2'd0, START = 2'd1, DATA = 2'd2, STOP = 2'd3;

    reg        rx_m = 1'b1, rx_s = 1'b1;
    reg [1:0]  state = IDLE;
    reg [CW-1:0] cnt = {CW{1'b0}};
    reg [2:0]  bit_idx = 3'd0;
    reg [7:0]  shift = 8'd0;

    always @(posedge clk) begin
        rx_m <= rx;
        rx_s <= rx_m;
    end

    always @(posedge clk) begin
        valid     <= 1'b0;
        frame_err <= 1'b0;
        if (rst) begin
            state   <= IDLE;
            cnt     <= 0;
            bit_idx <= 3'd0;
        end else begin
            case (state)
                IDLE: if (!rx_s) begin          // falling edge of the start bit
                    state <= START;
                    cnt   <= 0;
                end
                START: if (cnt == HALF) begin
                    cnt <= {CW{1'b0}};
                    if (!rx_s) begin            // still low in mid-bit: a real start bit
                        state   <= DATA;
                        bit_idx <= 3'd0;
                    end else
                        state <= IDLE;          // glitch
                end else
                    cnt <= cnt + 1'b1;
                DATA: if (cnt == LAST) begin
                    cnt   <= 0;
                    shift <= {rx_s, shift[7:1]};
                    if (bit_idx == 3'd7)
                        state <= STOP;
                    bit_idx <= bit_idx + 1'b1;
                end else
                    cnt <= cnt + 1'b1;
                STOP: if (cnt == LAST) begin
                    cnt   <= 0;
                    state <= IDLE;
                    if (rx_s) begin
                        data  <= shift;
                        valid <= 1'b1;
                    end else
                        frame_err <= 1'b1;
                end else
                    cnt <= cnt + 1'b1;
            endcase
        end
    end
endmodule
