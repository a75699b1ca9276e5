// UART transmitter: 8N1, LSB first, line idles high. CLKS_PER_BIT = clock frequency / baud rate.
// Load a byte with `start` while `busy` is low; `busy` stays high until the stop bit has been sent.
module uart_tx #(parameter integer CLKS_PER_BIT = 217) (
    input  wire       clk,
    input  wire       rst,
    input  wire [7:0] data,
    input  wire       start,
    output reg        tx = 1'b1,
    output wire       busy
);
    localparam integer CW = $clog2(CLKS_PER_BIT + 1);
    localparam [CW-1:0] LAST = CLKS_PER_BIT - 1;
    reg [9:0]    frame = 10'h3ff;   // {stop, data[7:0], start}, shifted out LSB first
    reg [3:0]    bits_left = 4'd0;
    reg [CW-1:0] cnt = {CW{1'b0}};

    assign busy = (bits_left != 4'd0);

    always @(posedge clk) begin
        if (rst) begin
            tx        <= 1'b1;
            bits_left <= 4'd0;
            cnt       <= {CW{1'b0}};
        end else if (!busy) begin
            tx <= 1'b1;
            if (start) begin
                frame     <= {1'b1, data, 1'b0};
                bits_left <= 4'd10;
                cnt       <= {CW{1'b0}};
                tx        <= 1'b0;          // start bit goes out now
            end
        end else if (cnt == LAST) begin
            cnt       <= {CW{1'b0}};
            bits_left <= bits_left - 1'b1;
            tx        <= (bits_left == 4'd1) ? 1'b1 : frame[4'd11 - bits_left];
        end else
            cnt <= cnt + 1'b1;
    end
endmodule
