// cs_popcount: number of ones in x, as a balanced adder tree (depth ceil(log2 N)).
//
// The tree halves the vector recursively; every adder is exactly as wide as its partial count.
// Written out instead of $countones because yosys expands $countones into a chain of N adds in
// its front end (deep recursion that the WebAssembly build's stack does not survive for N in the
// hundreds) and maps that chain to a depth-N carry path.
module cs_popcount #(
    parameter integer N = 8,                 // bits counted
    parameter integer W = $clog2(N + 1),     // width of count (>= $clog2(N + 1))
    parameter integer LEAF = 32               // up to this many bits: one $countones
) (
    input  wire [N-1:0] x,
    output wire [W-1:0] count
);
    generate
        if (N <= LEAF) begin : g_leaf
            assign count = W'($countones(x));
        end else begin : g_split
            localparam integer NL = N / 2;
            localparam integer NR = N - NL;
            localparam integer WL = $clog2(NL + 1);
            localparam integer WR = $clog2(NR + 1);
            wire [WL-1:0] cl;
            wire [WR-1:0] cr;
            cs_popcount #(.N(NL), .W(WL), .LEAF(LEAF)) u_lo (.x(x[NL-1:0]), .count(cl));
            cs_popcount #(.N(NR), .W(WR), .LEAF(LEAF)) u_hi (.x(x[N-1:NL]), .count(cr));
            assign count = {{(W - WL){1'b0}}, cl} + {{(W - WR){1'b0}}, cr};
        end
    endgenerate
endmodule
