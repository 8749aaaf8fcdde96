// Data movement and exchange: MOV MOVZX MOVSX MOVSXD LEA XCHG CMPXCHG CMPXCHG8B CMPXCHG16B
// XADD BSWAP CMOVcc SETcc, sign extension of the accumulator (CBW ... CQO), flag instructions
// (LAHF SAHF CLC STC CMC CLD STD), XLAT, NOP and PAUSE.
#include "engine/soft/exec_int.h"

#include <utility>

namespace vessel::soft::integer {

namespace {

bool is_system_operand(OpKind k)
{
    return k == OpKind::Cr || k == OpKind::Dr || k == OpKind::Seg;
}

void exec_mov(Cpu& c, const Insn& in)
{
    // MOV to/from segment, control and debug registers belong to the system group.
    if (is_system_operand(in.op[0].kind) || is_system_operand(in.op[1].kind)) [[unlikely]] {
        call_previous(c, in);
        return;
    }
    write_op(c, in, 0, read_op(c, in, 1));
}

void exec_movzx(Cpu& c, const Insn& in)
{
    write_op(c, in, 0, read_op(c, in, 1));
}

void exec_movsx(Cpu& c, const Insn& in)
{
    uint64_t v = read_op(c, in, 1);
    write_op(c, in, 0, static_cast<uint64_t>(sign_extend(v, in.op[1].size)));
}

void exec_lea(Cpu& c, const Insn& in)
{
    write_op(c, in, 0, effective_address(c, in));
}

// Memory operand index of a two-operand instruction (the register is the other one).
unsigned mem_index(const Insn& in)
{
    return op_is_mem(in, 0) ? 0 : 1;
}

void exec_xchg(Cpu& c, const Insn& in)
{
    if (op_is_mem(in, 0) || op_is_mem(in, 1)) {
        // XCHG with memory is always locked.
        unsigned m = mem_index(in), r = 1 - m;
        unsigned size = in.op[m].size;
        uint64_t v = read_op(c, in, r);
        uint64_t lin = mem_linear(c, in);
        uint64_t old;
        if (uint8_t* p = host_ptr(c, lin, size, Access::Write)) {
            old = atomic_fetch<AtomicOp::Xchg>(p, size, v);
        } else {
            old = read_mem(c, lin, size);
            write_mem(c, lin, size, v);
        }
        write_op(c, in, r, old);
        return;
    }
    uint64_t a = read_op(c, in, 0), b = read_op(c, in, 1);
    write_op(c, in, 0, b);
    write_op(c, in, 1, a);
}

void exec_cmpxchg(Cpu& c, const Insn& in)
{
    const unsigned size = in.op[0].size;
    const uint64_t acc = read_gpr(c, RAX, size);
    const uint64_t src = read_op(c, in, 1);
    uint64_t old;
    if (op_is_mem(in, 0)) {
        uint64_t lin = mem_linear(c, in);
        if (uint8_t* p = locked_ptr(c, in, lin, size)) {
            old = atomic_cas(p, size, acc, src);
        } else {
            old = read_mem(c, lin, size);
            // The destination is written in both cases (with its own value on failure).
            write_mem(c, lin, size, old == acc ? src : old);
        }
        if (old != acc)
            write_gpr(c, RAX, size, old);
    } else {
        old = read_op(c, in, 0);
        // Register form: only the register that changes is written (a failing 32-bit CMPXCHG
        // zero-extends RAX, not the destination).
        if (old == acc)
            write_op(c, in, 0, src);
        else
            write_gpr(c, RAX, size, old);
    }
    set_lazy(c, FlagOp::Sub, size, acc - old, acc, old);
}

// lock cmpxchg16b on host memory: returns true on success; lo/hi receive the value found.
bool cas16(uint8_t* p, uint64_t& lo, uint64_t& hi, uint64_t new_lo, uint64_t new_hi)
{
    bool ok;
    // SAFETY: p points at 16 bytes of guest RAM inside one page, 16-byte aligned (checked by
    // the caller: CMPXCHG16B raises #GP otherwise).
    auto* target = reinterpret_cast<unsigned __int128*>(p);
    asm volatile("lock cmpxchg16b %1"
                 : "=@ccz"(ok), "+m"(*target), "+a"(lo), "+d"(hi)
                 : "b"(new_lo), "c"(new_hi)
                 : "memory");
    return ok;
}

void exec_cmpxchg8b(Cpu& c, const Insn& in)
{
    const bool wide = in.mnemonic == ZYDIS_MNEMONIC_CMPXCHG16B;
    uint64_t lin = mem_linear(c, in);
    bool ok;
    if (wide) {
        if (lin & 15)
            raise_fault(kExcGP, 0);
        uint64_t lo = c.gpr[RAX], hi = c.gpr[RDX];
        if (uint8_t* p = host_ptr(c, lin, 16, Access::Write)) {
            ok = cas16(p, lo, hi, c.gpr[RBX], c.gpr[RCX]);
        } else {
            uint64_t cur_lo = read_mem(c, lin, 8), cur_hi = read_mem(c, lin + 8, 8);
            ok = cur_lo == lo && cur_hi == hi;
            uint64_t w[2] = { ok ? c.gpr[RBX] : cur_lo, ok ? c.gpr[RCX] : cur_hi };
            linear_write_slow(c, lin, w, 16, c.cpl == 3);
            lo = cur_lo;
            hi = cur_hi;
        }
        if (!ok) {
            c.gpr[RAX] = lo;
            c.gpr[RDX] = hi;
        }
    } else {
        uint64_t expected = (c.gpr[RDX] << 32) | (c.gpr[RAX] & 0xffffffffULL);
        uint64_t desired = (c.gpr[RCX] << 32) | (c.gpr[RBX] & 0xffffffffULL);
        uint64_t old;
        if (uint8_t* p = host_ptr(c, lin, 8, Access::Write)) {
            old = atomic_cas(p, 8, expected, desired);
        } else {
            old = read_mem(c, lin, 8);
            write_mem(c, lin, 8, old == expected ? desired : old);
        }
        ok = old == expected;
        if (!ok) {
            write_gpr(c, RAX, 4, old);
            write_gpr(c, RDX, 4, old >> 32);
        }
    }
    set_rflags_bits(c, ok ? kZF : 0, kZF);
}

void exec_xadd(Cpu& c, const Insn& in)
{
    const unsigned size = in.op[0].size;
    const uint64_t src = read_op(c, in, 1);
    uint64_t old;
    if (op_is_mem(in, 0)) {
        uint64_t lin = mem_linear(c, in);
        if (uint8_t* p = locked_ptr(c, in, lin, size)) {
            old = atomic_fetch<AtomicOp::Add>(p, size, src);
        } else {
            old = read_mem(c, lin, size);
            write_mem(c, lin, size, old + src);
        }
        write_op(c, in, 1, old);
    } else {
        old = read_op(c, in, 0);
        write_op(c, in, 1, old);
        write_op(c, in, 0, old + src); // the destination last: XADD r, r keeps the sum
    }
    set_lazy(c, FlagOp::Add, size, old + src, old, src);
}

void exec_bswap(Cpu& c, const Insn& in)
{
    uint64_t v = read_op(c, in, 0);
    switch (in.op[0].size) {
    case 4: v = __builtin_bswap32(static_cast<uint32_t>(v)); break;
    case 8: v = __builtin_bswap64(v); break;
    default: v = 0; break; // BSWAP r16 is undefined; processors clear the register's low word
    }
    write_op(c, in, 0, v);
}

template<unsigned CC>
void exec_cmov(Cpu& c, const Insn& in)
{
    uint64_t v = read_op(c, in, 1); // the source is read (and can fault) either way
    if (test_cc(c, CC))
        write_op(c, in, 0, v);
    else if (in.op[0].size == 4)
        write_gpr(c, in.op[0].reg, 4, c.gpr[in.op[0].reg]); // 32-bit destination: zero-extends
}

template<unsigned CC>
void exec_setcc(Cpu& c, const Insn& in)
{
    write_op(c, in, 0, test_cc(c, CC) ? 1 : 0);
}

void exec_cbw(Cpu& c, const Insn& in)
{
    switch (in.mnemonic) {
    case ZYDIS_MNEMONIC_CBW: write_gpr(c, RAX, 2, static_cast<uint64_t>(sign_extend(c.gpr[RAX], 1))); break;
    case ZYDIS_MNEMONIC_CWDE: write_gpr(c, RAX, 4, static_cast<uint64_t>(sign_extend(c.gpr[RAX], 2))); break;
    default: write_gpr(c, RAX, 8, static_cast<uint64_t>(sign_extend(c.gpr[RAX], 4))); break;
    }
}

void exec_cwd(Cpu& c, const Insn& in)
{
    unsigned size = in.mnemonic == ZYDIS_MNEMONIC_CWD ? 2 : in.mnemonic == ZYDIS_MNEMONIC_CDQ ? 4 : 8;
    write_gpr(c, RDX, size, (c.gpr[RAX] & sign_bit(size)) ? ~0ULL : 0);
}

void exec_lahf(Cpu& c, const Insn&)
{
    uint64_t f = get_rflags(c);
    uint64_t ah = (f & (kSF | kZF | kAF | kPF | kCF)) | 2;
    c.gpr[RAX] = (c.gpr[RAX] & ~0xff00ULL) | (ah << 8);
}

void exec_sahf(Cpu& c, const Insn&)
{
    set_rflags_bits(c, (c.gpr[RAX] >> 8) & 0xff, kSF | kZF | kAF | kPF | kCF);
}

void exec_clc(Cpu& c, const Insn&)
{
    set_rflags_bits(c, 0, kCF);
}
void exec_stc(Cpu& c, const Insn&)
{
    set_rflags_bits(c, kCF, kCF);
}
void exec_cmc(Cpu& c, const Insn&)
{
    set_rflags_bits(c, flag_cf(c) ? 0 : kCF, kCF);
}
void exec_cld(Cpu& c, const Insn&)
{
    c.rflags &= ~kDF;
}
void exec_std(Cpu& c, const Insn&)
{
    c.rflags |= kDF;
}

void exec_xlat(Cpu& c, const Insn& in)
{
    uint64_t off = (c.gpr[RBX] + (c.gpr[RAX] & 0xff)) & addr_mask(in.asize);
    uint64_t v = read_linear<uint8_t>(c, seg_linear(c, string_src_seg(in), off));
    write_gpr(c, RAX, 1, v);
}

void exec_nop(Cpu&, const Insn&)
{
}

// The CMOVcc/SETcc mnemonics in condition-code order (cc 0..15).
constexpr ZydisMnemonic kCmov[16] = { ZYDIS_MNEMONIC_CMOVO, ZYDIS_MNEMONIC_CMOVNO, ZYDIS_MNEMONIC_CMOVB,
    ZYDIS_MNEMONIC_CMOVNB, ZYDIS_MNEMONIC_CMOVZ, ZYDIS_MNEMONIC_CMOVNZ, ZYDIS_MNEMONIC_CMOVBE, ZYDIS_MNEMONIC_CMOVNBE,
    ZYDIS_MNEMONIC_CMOVS, ZYDIS_MNEMONIC_CMOVNS, ZYDIS_MNEMONIC_CMOVP, ZYDIS_MNEMONIC_CMOVNP, ZYDIS_MNEMONIC_CMOVL,
    ZYDIS_MNEMONIC_CMOVNL, ZYDIS_MNEMONIC_CMOVLE, ZYDIS_MNEMONIC_CMOVNLE };
constexpr ZydisMnemonic kSet[16] = { ZYDIS_MNEMONIC_SETO, ZYDIS_MNEMONIC_SETNO, ZYDIS_MNEMONIC_SETB,
    ZYDIS_MNEMONIC_SETNB, ZYDIS_MNEMONIC_SETZ, ZYDIS_MNEMONIC_SETNZ, ZYDIS_MNEMONIC_SETBE, ZYDIS_MNEMONIC_SETNBE,
    ZYDIS_MNEMONIC_SETS, ZYDIS_MNEMONIC_SETNS, ZYDIS_MNEMONIC_SETP, ZYDIS_MNEMONIC_SETNP, ZYDIS_MNEMONIC_SETL,
    ZYDIS_MNEMONIC_SETNL, ZYDIS_MNEMONIC_SETLE, ZYDIS_MNEMONIC_SETNLE };

template<unsigned... CC>
void register_cc(HandlerTable& t, std::integer_sequence<unsigned, CC...>)
{
    (set_handler(t, kCmov[CC], &exec_cmov<CC>), ...);
    (set_handler(t, kSet[CC], &exec_setcc<CC>), ...);
}

} // namespace

void register_mov(HandlerTable& t)
{
    set_handler(t, ZYDIS_MNEMONIC_MOV, &exec_mov);
    set_handler(t, ZYDIS_MNEMONIC_MOVZX, &exec_movzx);
    set_handler(t, ZYDIS_MNEMONIC_MOVSX, &exec_movsx);
    set_handler(t, ZYDIS_MNEMONIC_MOVSXD, &exec_movsx);
    set_handler(t, ZYDIS_MNEMONIC_LEA, &exec_lea);
    set_handler(t, ZYDIS_MNEMONIC_XCHG, &exec_xchg);
    set_handler(t, ZYDIS_MNEMONIC_CMPXCHG, &exec_cmpxchg);
    set_handler(t, ZYDIS_MNEMONIC_CMPXCHG8B, &exec_cmpxchg8b);
    set_handler(t, ZYDIS_MNEMONIC_CMPXCHG16B, &exec_cmpxchg8b);
    set_handler(t, ZYDIS_MNEMONIC_XADD, &exec_xadd);
    set_handler(t, ZYDIS_MNEMONIC_BSWAP, &exec_bswap);
    register_cc(t, std::make_integer_sequence<unsigned, 16> {});
    set_handler(t, ZYDIS_MNEMONIC_CBW, &exec_cbw);
    set_handler(t, ZYDIS_MNEMONIC_CWDE, &exec_cbw);
    set_handler(t, ZYDIS_MNEMONIC_CDQE, &exec_cbw);
    set_handler(t, ZYDIS_MNEMONIC_CWD, &exec_cwd);
    set_handler(t, ZYDIS_MNEMONIC_CDQ, &exec_cwd);
    set_handler(t, ZYDIS_MNEMONIC_CQO, &exec_cwd);
    set_handler(t, ZYDIS_MNEMONIC_LAHF, &exec_lahf);
    set_handler(t, ZYDIS_MNEMONIC_SAHF, &exec_sahf);
    set_handler(t, ZYDIS_MNEMONIC_CLC, &exec_clc);
    set_handler(t, ZYDIS_MNEMONIC_STC, &exec_stc);
    set_handler(t, ZYDIS_MNEMONIC_CMC, &exec_cmc);
    set_handler(t, ZYDIS_MNEMONIC_CLD, &exec_cld);
    set_handler(t, ZYDIS_MNEMONIC_STD, &exec_std);
    set_handler(t, ZYDIS_MNEMONIC_XLAT, &exec_xlat);
    set_handler(t, ZYDIS_MNEMONIC_NOP, &exec_nop);
    set_handler(t, ZYDIS_MNEMONIC_PAUSE, &exec_nop);
}

} // namespace vessel::soft::integer
