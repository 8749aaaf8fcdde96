// The host x87 operations behind the soft engine's x87 instructions (exec_x87_common.h).
// Each runs between FNSTENV and FLDENV of the host environment, so the host's control word,
// status word, tags and TOP come back exactly as they were whatever the operation leaves on the
// stack; the asm clobbers every x87 register, so the compiler keeps nothing there across it.
#include <cstddef>

#include "engine/soft/exec_x87_common.h"

namespace vessel::soft::x87 {

#define IO_OPERANDS                                                                                                    \
    [p] "r"(&io), [a] "i"(offsetof(HostIo, a)), [b] "i"(offsetof(HostIo, b)), [o0] "i"(offsetof(HostIo, out0)),        \
        [o1] "i"(offsetof(HostIo, out1)), [m] "i"(offsetof(HostIo, m64)), [bcd] "i"(offsetof(HostIo, bcd)),            \
        [cw] "i"(offsetof(HostIo, cw)), [sw] "i"(offsetof(HostIo, sw)), [env] "i"(offsetof(HostIo, env))
#define A " %c[a](%[p])"
#define B " %c[b](%[p])"
#define O0 " %c[o0](%[p])"
#define O1 " %c[o1](%[p])"
#define MEM " %c[m](%[p])"
#define BCD " %c[bcd](%[p])"
#define SW " %c[sw](%[p])"

// SAFETY: the asm only touches *io (through %[p]) and the x87 unit, whose environment it saves
// first and restores last; all x87 registers are declared clobbered.
#define RUN(body)                                                                                                      \
    asm volatile("fnstenv %c[env](%[p])\n\t"                                                                           \
                 "fnclex\n\t"                                                                                          \
                 "fldcw %c[cw](%[p])\n\t" body "\n\t"                                                                  \
                 "fldenv %c[env](%[p])"                                                                                \
                 :                                                                                                     \
                 : IO_OPERANDS                                                                                         \
                 : "memory", "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)", "st(7)")

// Loads, then the status word, then the result.
#define LOAD(insn, src) RUN(insn src "\n\tfnstsw" SW "\n\tfstpt" O0)
// Stores: the exceptions come from the store itself.
#define STORE(insn, dst) RUN("fldt" A "\n\t" insn dst "\n\tfnstsw" SW)
// ST(0) = a, ST(1) = b; operation; one result.
#define BINARY(insn) RUN("fldt" B "\n\tfldt" A "\n\t" insn "\n\tfnstsw" SW "\n\tfstpt" O0)
#define UNARY(insn) RUN("fldt" A "\n\t" insn "\n\tfnstsw" SW "\n\tfstpt" O0)
#define UNARY2(insn) RUN("fldt" A "\n\t" insn "\n\tfnstsw" SW "\n\tfstpt" O0 "\n\tfstpt" O1)

uint16_t host_x87(HostOp op, HostIo& io)
{
    io.cw = static_cast<uint16_t>(io.cw | 0x3f);
    switch (op) {
    case HostOp::LoadF32: LOAD("flds", MEM); break;
    case HostOp::LoadF64: LOAD("fldl", MEM); break;
    case HostOp::LoadI16: LOAD("filds", MEM); break;
    case HostOp::LoadI32: LOAD("fildl", MEM); break;
    case HostOp::LoadI64: LOAD("fildll", MEM); break;
    case HostOp::LoadBcd: LOAD("fbld", BCD); break;
    case HostOp::Ld1: LOAD("fld1", ""); break;
    case HostOp::Ldl2t: LOAD("fldl2t", ""); break;
    case HostOp::Ldl2e: LOAD("fldl2e", ""); break;
    case HostOp::Ldpi: LOAD("fldpi", ""); break;
    case HostOp::Ldlg2: LOAD("fldlg2", ""); break;
    case HostOp::Ldln2: LOAD("fldln2", ""); break;
    case HostOp::Ldz: LOAD("fldz", ""); break;
    case HostOp::StoreF32: STORE("fstps", MEM); break;
    case HostOp::StoreF64: STORE("fstpl", MEM); break;
    case HostOp::StoreI16: STORE("fistps", MEM); break;
    case HostOp::StoreI32: STORE("fistpl", MEM); break;
    case HostOp::StoreI64: STORE("fistpll", MEM); break;
    case HostOp::StoreTI16: STORE("fisttps", MEM); break;
    case HostOp::StoreTI32: STORE("fisttpl", MEM); break;
    case HostOp::StoreTI64: STORE("fisttpll", MEM); break;
    case HostOp::StoreBcd: STORE("fbstp", BCD); break;
    // AT&T operand order; with %st as the destination these are the Intel D8 forms
    // ST(0) = ST(0) op ST(1) (fsubr/fdivr: ST(1) op ST(0)).
    case HostOp::Add: BINARY("fadd %%st(1), %%st"); break;
    case HostOp::Sub: BINARY("fsub %%st(1), %%st"); break;
    case HostOp::Subr: BINARY("fsubr %%st(1), %%st"); break;
    case HostOp::Mul: BINARY("fmul %%st(1), %%st"); break;
    case HostOp::Div: BINARY("fdiv %%st(1), %%st"); break;
    case HostOp::Divr: BINARY("fdivr %%st(1), %%st"); break;
    case HostOp::Scale: BINARY("fscale"); break;
    case HostOp::Prem: BINARY("fprem"); break;
    case HostOp::Prem1: BINARY("fprem1"); break;
    case HostOp::Yl2x: BINARY("fyl2x"); break;
    case HostOp::Yl2xp1: BINARY("fyl2xp1"); break;
    case HostOp::Patan: BINARY("fpatan"); break;
    case HostOp::Sqrt: UNARY("fsqrt"); break;
    case HostOp::Rndint: UNARY("frndint"); break;
    case HostOp::F2xm1: UNARY("f2xm1"); break;
    case HostOp::Sin: UNARY("fsin"); break;
    case HostOp::Cos: UNARY("fcos"); break;
    case HostOp::Ptan: UNARY2("fptan"); break;
    case HostOp::Sincos: UNARY2("fsincos"); break;
    case HostOp::Xtract: UNARY2("fxtract"); break;
    case HostOp::Com: RUN("fldt" B "\n\tfldt" A "\n\tfcompp\n\tfnstsw" SW); break;
    case HostOp::Ucom: RUN("fldt" B "\n\tfldt" A "\n\tfucompp\n\tfnstsw" SW); break;
    case HostOp::Tst: RUN("fldt" A "\n\tftst\n\tfnstsw" SW); break;
    case HostOp::Xam: RUN("fldt" A "\n\tfxam\n\tfnstsw" SW); break;
    }
    return io.sw;
}

#define MEMOP(insn) RUN("fldt" A "\n\t" insn MEM "\n\tfnstsw" SW "\n\tfstpt" O0)
#define MEMOPS(base)                                                                                                   \
    switch (type) {                                                                                                    \
    case MemArg::F32: MEMOP("f" base "s"); break;                                                                      \
    case MemArg::F64: MEMOP("f" base "l"); break;                                                                      \
    case MemArg::I16: MEMOP("fi" base "s"); break;                                                                     \
    case MemArg::I32: MEMOP("fi" base "l"); break;                                                                     \
    }

uint16_t host_x87_mem(HostOp op, MemArg type, HostIo& io)
{
    io.cw = static_cast<uint16_t>(io.cw | 0x3f);
    switch (op) {
    case HostOp::Add: MEMOPS("add"); break;
    case HostOp::Sub: MEMOPS("sub"); break;
    case HostOp::Subr: MEMOPS("subr"); break;
    case HostOp::Mul: MEMOPS("mul"); break;
    case HostOp::Div: MEMOPS("div"); break;
    case HostOp::Divr: MEMOPS("divr"); break;
    default: MEMOPS("com"); break;
    }
    return io.sw;
}

} // namespace vessel::soft::x87
