"""Verilog generated around the accelerator: the out-of-context wrapper and the UART board tops.

Out-of-context wrapper (``codesign_ooc_top``, board ``none``)
    The accelerator's buses are far wider than any package has pins, and unconnected inputs or
    outputs would let synthesis delete the logic. The wrapper adds, and nothing else:

    * a ``fields*bits``-bit shift register fed 8 bits per clock from the pins ``din[7:0]`` that drives
      ``s_axis_tdata`` (one FF per input bit; 8 lanes keep the FF chain short: yosys-wasm runs out of
      stack on chains of more than ~2,500 FFs);
    * a register on every control pin (``rst``, ``in_valid``, ``out_ready``, ``in_ready``, ``out_valid``);
    * an output register on ``m_axis_tdata`` (one FF per output bit) followed by an XOR reduction to
      the pin ``dout`` (about ``bits*fields/3`` LUT4s), so every output bit stays observable. Builds
      that target more than ``OOC_FAST_MHZ`` register the reduction in stages of 4-input XORs (one LUT4
      level each, ``xor_stage_ffs`` FFs): a wide XOR in one cycle is several LUT levels, which alone
      capped the wrapper below 200 MHz on ECP5 and hid a 200 MHz accelerator behind it. Those builds also
      register each control pin twice (one register near the pin, one near the accelerator): the route
      from a pin-side register to the output FIFO's read enable was the next critical path.

    15 pins in all. The overhead is reported in ``fpga.json`` (``wrapper``) so it can be subtracted.

UART board top (boards ``ulx3s``, ``icebreaker``) -- byte framing at 115200 baud, 8N1
    host -> board: ``0xA5``, then the input fields in order (field 0 first), each field as
    ``ceil(bits/8)`` bytes little-endian (two's complement when signed).
    board -> host: ``0x5A``, then the output fields the same way (sign-extended to whole bytes),
    then the argmax class index (1 byte, 2 if more than 256 output fields; first maximum wins).
    A byte other than ``0xA5`` while idle is ignored; a frame that stalls for 256 byte times is
    dropped. LEDs: heartbeat, busy, a toggle per answered request, error (UART framing), and on the
    ULX3S the low 4 bits of the last class on led[7:4].
"""

from __future__ import annotations

from codesign.errors import CodesignError
from codesign.fpga.interface import Interface

START_BYTE = 0xA5
REPLY_BYTE = 0x5A

BOARD_CLOCK_HZ = {"ulx3s": 25_000_000, "icebreaker": 12_000_000}
BOARD_TOP = "board_top"
OOC_TOP = "codesign_ooc_top"
UART_CORE = "codesign_uart_core"
OOC_DIN_BITS = 8
OOC_FAST_MHZ = 100.0  # above this target clock the wrapper's XOR reduction is registered per LUT level
OOC_FAST_CTL_FFS = 5  # and each control pin has a second register (pin side, accelerator side)


def ooc_fast(w_out: int, clock_mhz: float) -> bool:
    """Whether the wrapper of a build at ``clock_mhz`` registers its XOR reduction and control pins twice."""
    return clock_mhz > OOC_FAST_MHZ and w_out > 4


def ooc_fast_ffs(w_out: int, clock_mhz: float) -> int:
    """FFs the fast wrapper adds to the plain one (XOR stages + second control registers); 0 when slow."""
    return xor_stage_ffs(w_out) + OOC_FAST_CTL_FFS if ooc_fast(w_out, clock_mhz) else 0


def xor_stages(width: int) -> list[int]:
    """Widths of the registered stages that reduce ``width`` bits 4 to 1 down to one bit (``dout``)."""
    out = []
    while width > 1:
        width = (width + 3) // 4
        out.append(width)
    return out


def xor_stage_ffs(width: int) -> int:
    """FFs of the registered XOR reduction, ``dout`` not counted (it is a wrapper FF either way)."""
    return sum(xor_stages(width)[:-1])


def _xor_tree(w_out: int) -> tuple[str, str]:
    """(declarations, always-block lines) of the registered XOR reduction of ``oq`` into ``dout``."""
    decl, body, prev, pw = [], [], "oq", w_out
    stages = xor_stages(w_out)
    for k, w in enumerate(stages):
        dst = "dout" if k == len(stages) - 1 else f"xr{k}"
        if dst != "dout":
            decl.append(f"    reg [{w - 1}:0] {dst} = 0;")
        for b in range(w):
            hi = min(4 * b + 3, pw - 1)
            sel = f"{prev}[{hi}:{4 * b}]" if hi > 4 * b else f"{prev}[{4 * b}]"
            body.append(f"        {dst}{'' if dst == 'dout' else f'[{b}]'} <= ^{sel};")
        prev, pw = dst, w
    return "\n".join(decl) + ("\n" if decl else ""), "\n".join(body)


def _acc_instance(iface: Interface, rst_expr: str, s_tdata: str, s_tvalid: str, s_tready: str,
                  m_tdata: str, m_tvalid: str, m_tready: str) -> str:
    i, o = iface.input, iface.output
    ports = [f".{iface.clock}(clk)"]
    if iface.reset:
        ports.append(f".{iface.reset}({'~' if iface.reset_active_low else ''}{rst_expr})")
    ports += [f".{i.tdata}({s_tdata})", f".{i.tvalid}({s_tvalid})"]
    if i.tready:
        ports.append(f".{i.tready}({s_tready})")
    ports += [f".{o.tdata}({m_tdata})", f".{o.tvalid}({m_tvalid})"]
    if o.tready:
        ports.append(f".{o.tready}({m_tready})")
    body = ",\n        ".join(ports)
    tready_note = "" if i.tready else f"    assign {s_tready} = 1'b1;  // accelerator has no tready\n"
    return f"{tready_note}    {iface.top} u_acc (\n        {body}\n    );\n"


def ooc_top(iface: Interface, clock_mhz: float = 0.0) -> str:
    """Verilog of the out-of-context wrapper (see the module docstring for what it adds); the XOR
    reduction is registered per LUT level when ``clock_mhz`` > ``OOC_FAST_MHZ``."""
    w_in, w_out = iface.input.beat_width, iface.output.width  # io=stream: one pixel beat
    lanes = min(OOC_DIN_BITS, w_in)
    if w_in == lanes:
        shift = f"sr <= din[{lanes - 1}:0];"
    else:
        shift = f"sr <= {{sr[{w_in - lanes - 1}:0], din[{lanes - 1}:0]}};"
    xor_decl, xor = "", "        dout      <= ^oq;"
    note, ctl = "XOR reduction", "5 control FFs"
    acc = ("rst", "iv", "ordy")  # the registers that drive the accelerator's reset, tvalid and tready
    ctl_decl, ctl_regs = "", ""
    out_valid, in_ready = "m_tvalid", "s_tready"
    if ooc_fast(w_out, clock_mhz):
        xor_decl, xor = _xor_tree(w_out)
        note = f"XOR reduction registered per LUT level ({xor_stage_ffs(w_out)} FFs)"
        ctl = f"{5 + OOC_FAST_CTL_FFS} control FFs (two on each control pin: pin side, accelerator side)"
        acc = ("rst2", "iv2", "ordy2")
        ctl_decl = "    reg rst2 = 1'b1, iv2 = 1'b0, ordy2 = 1'b0, ov = 1'b0, ir = 1'b0;\n"
        ctl_regs = ("        rst2 <= rst;\n        iv2  <= iv;\n        ordy2 <= ordy;\n"
                    "        ov   <= m_tvalid;\n        ir   <= s_tready;\n")
        out_valid, in_ready = "ov", "ir"
    return f"""// Generated by codesign.fpga: out-of-context wrapper around {iface.top} (resource/fmax builds).
// Adds a {w_in}-bit input shift register ({lanes} bits/clock), a {w_out}-bit output register + {note}, {ctl}.
module {OOC_TOP} (
    input  wire clk,
    input  wire rst_in,
    input  wire [7:0] din,
    input  wire in_valid,
    input  wire out_ready,
    output reg  dout,
    output reg  out_valid,
    output reg  in_ready
);
    reg rst = 1'b1, iv = 1'b0, ordy = 1'b0;
{ctl_decl}    reg [{w_in - 1}:0] sr = 0;
    reg [{w_out - 1}:0] oq = 0;
{xor_decl}    wire [{w_out - 1}:0] m_tdata;
    wire m_tvalid, s_tready;
    always @(posedge clk) begin
        rst  <= rst_in;
        iv   <= in_valid;
        ordy <= out_ready;
{ctl_regs}        {shift}
        oq        <= m_tdata;
{xor}
        out_valid <= {out_valid};
        in_ready  <= {in_ready};
    end
{_acc_instance(iface, acc[0], "sr", acc[1], "s_tready", "m_tdata", "m_tvalid", acc[2])}endmodule
"""


def _shift_in(buf: str, nbytes: int) -> str:
    return f"{buf} <= rx_data;" if nbytes == 1 else f"{buf} <= {{rx_data, {buf}[{nbytes * 8 - 1}:8]}};"


# long by design: one Verilog template (UART framing FSM + accelerator), read top to bottom
def uart_core(iface: Interface) -> str:
    """Verilog of ``codesign_uart_core``: UART framing + accelerator, board-independent."""
    if iface.io != "vector":
        raise CodesignError(f"{iface.folder}: the UART board wrapper sends one whole input vector per beat; this "
                            f"design was generated with rtl.io={iface.io}. Build it out of context (board none), "
                            "or regenerate it with rtl.io: vector for a board")
    i, o = iface.input, iface.output
    in_bytes = i.fields * i.bytes_per_field
    out_bpf = o.bytes_per_field
    arg_bytes = 1 if o.fields <= 256 else 2
    tx_bytes = 1 + o.fields * out_bpf + arg_bytes
    idx_w = max(1, (o.fields).bit_length())
    last_class = (f"{{{8 - idx_w}'d0, best_idx}}" if idx_w < 8 else "best_idx[7:0]" if idx_w > 8 else "best_idx")
    cnt_w = max(in_bytes, tx_bytes).bit_length() + 1

    unpack = "\n".join(
        f"    assign acc_in[{g * i.bits + i.bits - 1}:{g * i.bits}] = "
        f"in_buf[{g * i.bytes_per_field * 8 + i.bits - 1}:{g * i.bytes_per_field * 8}];"
        for g in range(i.fields)
    )
    ext_bits = out_bpf * 8 - o.bits

    def field(g: int) -> str:
        f = f"out_buf[{g * o.bits + o.bits - 1}:{g * o.bits}]"
        if ext_bits == 0:
            return f
        fill = f"{{{ext_bits}{{out_buf[{g * o.bits + o.bits - 1}]}}}}" if o.signed else f"{ext_bits}'d0"
        return f"{{{fill}, {f}}}"

    arg = f"{{{arg_bytes * 8 - idx_w}'d0, best_idx}}" if arg_bytes * 8 > idx_w else "best_idx"
    frame_parts = [arg] + [field(g) for g in reversed(range(o.fields))] + ["8'h5A"]
    frame = ",\n        ".join(frame_parts)
    cmp = "$signed(arg_sr[{b}:0]) > $signed(best_val)" if o.signed else "arg_sr[{b}:0] > best_val"
    cmp = cmp.format(b=o.bits - 1)
    arg_shift = "arg_sr <= arg_sr;" if o.fields == 1 else f"arg_sr <= {{{o.bits}'d0, arg_sr[{o.width - 1}:{o.bits}]}};"
    tx_shift = f"tx_sr <= {{8'd0, tx_sr[{tx_bytes * 8 - 1}:8]}};"

    return f"""// Generated by codesign.fpga: UART front end for {iface.top}.
// Frame in : 0xA5, {i.fields} fields x {i.bytes_per_field} byte(s) little-endian ({in_bytes} bytes).
// Frame out: 0x5A, {o.fields} fields x {out_bpf} byte(s) little-endian, argmax ({arg_bytes} byte(s)); {tx_bytes} bytes.
module {UART_CORE} #(
    parameter integer CLKS_PER_BIT = 217,
    parameter integer HEARTBEAT_BITS = 24
) (
    input  wire       clk,
    input  wire       rx,
    output wire       tx,
    output wire [3:0] led,      // {{error, done toggle, busy, heartbeat}}
    output reg  [7:0] last_class = 8'd0
);
    localparam integer TIMEOUT = CLKS_PER_BIT * 10 * 256;
    localparam integer TW = $clog2(TIMEOUT + 1);
    localparam [TW-1:0] TIMEOUT_C = TIMEOUT;
    localparam [2:0] S_IDLE = 3'd0, S_RECV = 3'd1, S_FEED = 3'd2, S_WAIT = 3'd3, S_ARGMAX = 3'd4, S_TX = 3'd5;

    // power-on reset: 16 clocks
    reg [4:0] por = 5'd0;
    wire rst = ~por[4];
    always @(posedge clk) if (rst) por <= por + 1'b1;

    wire [7:0] rx_data;
    wire rx_valid, rx_ferr, tx_busy;
    reg  [7:0] tx_data = 8'd0;
    reg  tx_start = 1'b0;
    uart_rx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_rx (.clk(clk), .rst(rst), .rx(rx), .data(rx_data), .valid(rx_valid), .frame_err(rx_ferr));
    uart_tx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_tx (.clk(clk), .rst(rst), .data(tx_data), .start(tx_start), .tx(tx), .busy(tx_busy));

    reg [2:0] state = S_IDLE;
    reg [{cnt_w - 1}:0] cnt = 0;
    reg [TW-1:0] idle_clks = 0;
    reg [{in_bytes * 8 - 1}:0] in_buf = 0;
    reg [{o.width - 1}:0] out_buf = 0, arg_sr = 0;
    reg [{o.bits - 1}:0] best_val = 0;
    reg [{idx_w - 1}:0] best_idx = 0, arg_idx = 0;
    reg [{tx_bytes * 8 - 1}:0] tx_sr = 0;
    reg s_tvalid = 1'b0, m_tready = 1'b0, done_t = 1'b0, err = 1'b0;
    reg [HEARTBEAT_BITS - 1:0] hb = 0;

    wire [{i.width - 1}:0] acc_in;
{unpack}
    wire [{o.width - 1}:0] acc_out;
    wire acc_out_valid, acc_in_ready;
    wire [{tx_bytes * 8 - 1}:0] frame = {{
        {frame}
    }};

{_acc_instance(iface, "rst", "acc_in", "s_tvalid", "acc_in_ready", "acc_out", "acc_out_valid", "m_tready")}
    always @(posedge clk) begin
        hb <= hb + 1'b1;
        tx_start <= 1'b0;
        if (rx_ferr) err <= 1'b1;
        if (rst) begin
            state <= S_IDLE;
            s_tvalid <= 1'b0;
            m_tready <= 1'b0;
            err <= 1'b0;
        end else case (state)
            S_IDLE: if (rx_valid && rx_data == 8'hA5) begin
                state <= S_RECV;
                cnt <= 0;
                idle_clks <= 0;
            end
            S_RECV: if (rx_valid) begin
                {_shift_in("in_buf", in_bytes)}
                idle_clks <= 0;
                cnt <= cnt + 1'b1;
                if (cnt == {in_bytes - 1}) begin
                    state <= S_FEED;
                    s_tvalid <= 1'b1;
                end
            end else if (idle_clks == TIMEOUT_C) begin
                state <= S_IDLE;        // stalled frame: drop it
                err <= 1'b1;
            end else
                idle_clks <= idle_clks + 1'b1;
            S_FEED: if (acc_in_ready) begin
                s_tvalid <= 1'b0;
                m_tready <= 1'b1;
                state <= S_WAIT;
            end
            S_WAIT: if (acc_out_valid) begin
                m_tready <= 1'b0;
                out_buf <= acc_out;
                arg_sr <= acc_out;
                best_val <= acc_out[{o.bits - 1}:0];
                best_idx <= 0;
                arg_idx <= 0;
                state <= S_ARGMAX;
            end
            S_ARGMAX: begin     // one field per clock, first maximum wins
                if ({cmp}) begin
                    best_val <= arg_sr[{o.bits - 1}:0];
                    best_idx <= arg_idx;
                end
                {arg_shift}
                arg_idx <= arg_idx + 1'b1;
                if (arg_idx == {o.fields - 1}) begin
                    state <= S_TX;
                    cnt <= 0;
                end
            end
            S_TX: if (cnt == 0) begin
                tx_sr <= frame;
                cnt <= 1;
                last_class <= {last_class};
            end else if (!tx_busy && !tx_start) begin
                tx_data <= tx_sr[7:0];
                tx_start <= 1'b1;
                {tx_shift}
                cnt <= cnt + 1'b1;
                if (cnt == {tx_bytes}) begin
                    state <= S_IDLE;
                    done_t <= ~done_t;
                end
            end
            default: state <= S_IDLE;
        endcase
    end

    assign led = {{err, done_t, state != S_IDLE, hb[HEARTBEAT_BITS - 1]}};
endmodule
"""


def board_top(iface: Interface, board: str) -> str:
    """Verilog of ``board_top`` for a board: the UART core wired to the board's pin names."""
    clk_hz = BOARD_CLOCK_HZ[board]
    cpb = round(clk_hz / 115200)
    hb = max(2, (clk_hz // 2).bit_length() - 1)
    if board == "ulx3s":
        return f"""// Generated by codesign.fpga: ULX3S (ECP5-85F) top, 25 MHz, UART over the FTDI port.
module {BOARD_TOP} #(parameter integer CLKS_PER_BIT = {cpb}) (
    input  wire       clk_25mhz,
    input  wire       ftdi_txd,     // host -> FPGA
    output wire       ftdi_rxd,     // FPGA -> host
    output wire [7:0] led
);
    wire [3:0] st;
    wire [7:0] cls;
    {UART_CORE} #(.CLKS_PER_BIT(CLKS_PER_BIT), .HEARTBEAT_BITS({hb})) u_core (
        .clk(clk_25mhz), .rx(ftdi_txd), .tx(ftdi_rxd), .led(st), .last_class(cls));
    assign led = {{cls[3:0], st}};
endmodule
"""
    if board == "icebreaker":
        return f"""// Generated by codesign.fpga: iCEBreaker (iCE40 UP5K) top, 12 MHz, UART over the FTDI port.
module {BOARD_TOP} #(parameter integer CLKS_PER_BIT = {cpb}) (
    input  wire CLK,
    input  wire RX,        // host -> FPGA
    output wire TX,        // FPGA -> host
    output wire LEDR_N,    // error (active low)
    output wire LEDG_N,    // heartbeat (active low)
    output wire LED1, LED2, LED3, LED4, LED5   // snap-off PMOD: busy, done toggle, class[2:0]
);
    wire [3:0] st;
    wire [7:0] cls;
    {UART_CORE} #(.CLKS_PER_BIT(CLKS_PER_BIT), .HEARTBEAT_BITS({hb})) u_core (
        .clk(CLK), .rx(RX), .tx(TX), .led(st), .last_class(cls));
    assign LEDG_N = ~st[0];
    assign LEDR_N = ~st[3];
    assign {{LED5, LED4, LED3, LED2, LED1}} = {{cls[2:0], st[2], st[1]}};
endmodule
"""
    raise ValueError(f"unknown board {board!r}")


def frame_sizes(iface: Interface) -> tuple[int, int]:
    """(request bytes, reply bytes) of the UART framing, start/reply bytes included."""
    i, o = iface.input, iface.output
    arg_bytes = 1 if o.fields <= 256 else 2
    return 1 + i.fields * i.bytes_per_field, 1 + o.fields * o.bytes_per_field + arg_bytes
