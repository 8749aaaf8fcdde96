// Block translation (see jit.h for the design). Register use in translated code:
//   rbx  the Cpu                       r12  guest RIP of the block's first instruction
//   rbp r13 r14 r15: up to four guest registers the block uses most, loaded at its start and
//   written back to Cpu::gpr before anything else can look (a handler call, an exit)
//   rax rcx: the instruction's operands (destination, source); rdx: host pointer of its memory
//   operand; rsi rdi r8: address computation and the TLB look-up. Nothing lives in a caller-saved
//   register across an instruction boundary, and rsp stays where the entry stub put it (the
//   frame description in jit.cpp relies on that).
#include "engine/soft/jit_emit.h"

#include <Zydis/Zydis.h>
#include <xbyak/xbyak.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "engine/soft/flags.h"
#include "engine/soft/fpu_state.h"
#include "engine/soft/platform.h"

namespace vessel::soft {

// VESSEL_JIT_STATS=1: translated code counts the instructions it leaves to the interpreter's
// handlers, by form (mnemonic, operands, prefixes; "slow" when a translated instruction took its
// slow path: TLB miss, MMIO, fault); printed when the vCPU's translator goes away.
bool g_jit_stats = [] {
    const char* s = std::getenv("VESSEL_JIT_STATS");
    return s && *s == '1';
}();

namespace {

struct FormStats {
    std::mutex lock;
    std::map<std::string, std::unique_ptr<std::atomic<uint64_t>>> counts;
};
FormStats& form_stats()
{
    static FormStats* stats = new FormStats; // never destroyed: vCPU threads print at their end
    return *stats;
}

std::string form_of(const Insn& in, bool slow)
{
    std::string s = slow ? "slow " : "";
    if (in.flags & kFlagLock)
        s += "lock ";
    if (in.flags & kFlagRep)
        s += "rep ";
    if (in.flags & kFlagRepne)
        s += "repne ";
    s += ZydisMnemonicGetString(static_cast<ZydisMnemonic>(in.mnemonic));
    static constexpr const char* kinds[] = { "-", "r", "h", "m", "i", "seg", "cr", "dr", "xmm", "mm", "st", "ptr" };
    for (unsigned i = 0; i < in.nops && i < 4; ++i) {
        const Operand& o = in.op[i];
        s += i ? "," : " ";
        s += kinds[static_cast<unsigned>(o.kind)];
        s += std::to_string(o.size * 8);
    }
    if ((in.flags & kFlagHasMem) && (in.flags & kFlagSegOverride))
        s += " seg" + std::to_string(in.seg);
    return s;
}

std::atomic<uint64_t>* form_counter(const Insn& in, bool slow)
{
    FormStats& st = form_stats();
    std::lock_guard guard(st.lock);
    auto& slot = st.counts[form_of(in, slow)];
    if (!slot)
        slot = std::make_unique<std::atomic<uint64_t>>(0);
    return slot.get();
}

} // namespace

void jit_print_stats()
{
    if (!g_jit_stats)
        return;
    FormStats& st = form_stats();
    std::lock_guard guard(st.lock);
    std::vector<std::pair<uint64_t, const std::string*>> v;
    uint64_t total = 0;
    for (auto& [form, n] : st.counts)
        if (uint64_t k = n->load()) {
            v.emplace_back(k, &form);
            total += k;
        }
    std::sort(v.rbegin(), v.rend());
    std::fprintf(stderr, "jit: %lu instructions left to handlers\n", static_cast<unsigned long>(total));
    for (size_t i = 0; i < v.size() && i < 60; ++i)
        std::fprintf(
            stderr, "jit: interpreted %-40s %12lu\n", v[i].second->c_str(), static_cast<unsigned long>(v[i].first));
}

CpuLayout CpuLayout::of(const Cpu& c, const BlockCache& cache)
{
    auto at = [&](const void* p) {
        return static_cast<int32_t>(static_cast<const char*>(p) - reinterpret_cast<const char*>(&c));
    };
    CpuLayout l {};
    l.gpr = at(&c.gpr[0]);
    l.rip = at(&c.rip);
    l.insn_start = at(&c.insn_start);
    l.rflags = at(&c.rflags);
    l.lf_op = at(&c.lf.op);
    l.lf_res = at(&c.lf.res);
    l.stop_block = at(&c.stop_block);
    l.segbase = at(&c.segbase[0]);
    l.attention = at(&c.attention);
    l.code_write_epoch = c.machine->code_write_epoch_address();
    l.tlb_gen = at(&c.tlb.gen);
    l.tlb_gen_global = at(&c.tlb.gen_global);
    l.tlb_page_gen = at(&c.tlb.page_gen[0]);
    l.halted = at(&c.halted);
    l.interrupt_shadow = at(&c.interrupt_shadow);
    l.jump_table = cache.jump_table();
    l.jit_left = at(&c.jit_left);
    l.cr0 = at(&c.cr0);
    l.cr4 = at(&c.cr4);
    l.fx = at(&c.fx[0]);
    l.jit_cache = at(&c.jit_cache);
    l.cpl = at(&c.cpl);
    for (unsigned i = 0; i < 6; ++i)
        l.seg_selector[i] = at(&c.seg[i].selector);
    l.gs_base = at(&c.seg[GS].base);
    l.kernel_gs_base = at(&c.msrs.kernel_gs_base);
    l.tlb[0] = at(&c.tlb.e[0][0]);
    l.tlb[1] = at(&c.tlb.e[1][0]);
    return l;
}

namespace {

// STI from translated code (CPL 0, IF clear): the block ends right after the next instruction,
// whose exit looks at `attention`, so that instruction is the interrupt shadow.
void jit_sti(Cpu* c)
{
    c->rflags |= kIF;
    interrupt_window_opened(*c);
}

// Puts the arithmetic flags in the form translated code keeps them in: a host RFLAGS image in
// lf.res, lf.op = Host.
void jit_flags_to_host(Cpu* c)
{
    if (c->lf.op == FlagOp::Host)
        return;
    c->lf.res = get_rflags(*c);
    c->lf.op = FlagOp::Host;
}

// What the translator does with an instruction.
enum class Kind : uint8_t {
    Generic, // the interpreter's handler, called from translated code
    Nop,
    Mov,
    Alu, // ADD OR ADC SBB AND SUB XOR CMP TEST
    Shift, // SHL SHR SAR ROL ROR RCL RCR
    Unary, // INC DEC NEG NOT
    Extend, // MOVZX MOVSX MOVSXD
    Lea,
    Imul,
    Cmov,
    Setcc,
    Bt, // BT BTS BTR BTC on a register
    Xchg, // register with register
    Bswap,
    Convert, // CBW CWDE CDQE CWD CDQ CQO
    Push,
    Pop,
    Jcc,
    Jmp,
    Call,
    Ret,
    JmpInd, // JMP r/m64
    CallInd, // CALL r/m64
    MulDiv, // MUL IMUL DIV r/m (one operand: rDX:rAX)
    BitScan, // BSF BSR
    Sse, // SSE2 integer/bitwise ops and moves on XMM registers (Cpu::fx)
    Atomic, // XADD, CMPXCHG, XCHG with memory: run natively (with LOCK where the guest has it)
    BtMem, // BT BTS BTR BTC on memory (LOCK where the guest has it), immediate or register offset
    PushMem, // PUSH m64
    Pushf, // PUSHFQ
    Leave, // LEAVE (64-bit)
    MovFromSeg, // MOV r, Sreg
    Fence, // LFENCE MFENCE SFENCE: the host's
    Cli, // CLI at CPL 0
    Swapgs, // SWAPGS at CPL 0
    Cmpxchg16b, // host LOCK CMPXCHG16B on the (16-byte aligned) host pointer
    DoubleShift, // SHLD SHRD by an immediate
    FlagDf, // CLD STD
    Sti, // STI at CPL 0, not last in its block: the block ends after the next instruction
};

// How an instruction touches the arithmetic flags.
enum class Writes : uint8_t {
    None,
    All, // all six (those it leaves undefined take the host silicon's values)
    Partial, // some: the guest's flags are loaded into the host first, then all six stored
};

struct Plan {
    Kind kind { Kind::Generic };
    Writes writes { Writes::None };
    bool reads { false }; // reads flags (ADC SBB RCL RCR CMOVcc SETcc Jcc)
    bool mem_write { false }; // the memory operand is written
    bool can_fault { false };
    bool capture { false }; // store the flags it produces (a later instruction may read them)
    bool capture_r9 { false }; // only a fault before the next writer could see them: keep them
                               // in r9 (LAHF/SETO), stored by that fault's slow path
    bool aligned { false }; // SSE: a 16-byte memory operand must be aligned (#GP otherwise)
    bool lock { false }; // emit LOCK: the guest's LOCK prefix, run as a host atomic on guest RAM
};

// SSE instructions translated to themselves: xmm, xmm/m128 (memory aligned).
bool sse_binary(ZydisMnemonic m)
{
    switch (m) {
    case ZYDIS_MNEMONIC_PXOR:
    case ZYDIS_MNEMONIC_POR:
    case ZYDIS_MNEMONIC_PAND:
    case ZYDIS_MNEMONIC_PANDN:
    case ZYDIS_MNEMONIC_PCMPEQB:
    case ZYDIS_MNEMONIC_PCMPEQW:
    case ZYDIS_MNEMONIC_PCMPEQD:
    case ZYDIS_MNEMONIC_PADDB:
    case ZYDIS_MNEMONIC_PADDW:
    case ZYDIS_MNEMONIC_PADDD:
    case ZYDIS_MNEMONIC_PADDQ:
    case ZYDIS_MNEMONIC_PSUBB:
    case ZYDIS_MNEMONIC_PSUBW:
    case ZYDIS_MNEMONIC_PSUBD:
    case ZYDIS_MNEMONIC_PSUBQ:
    case ZYDIS_MNEMONIC_PMINUB:
    case ZYDIS_MNEMONIC_PMAXUB:
    case ZYDIS_MNEMONIC_PUNPCKLBW:
    case ZYDIS_MNEMONIC_PUNPCKLWD:
    case ZYDIS_MNEMONIC_PUNPCKLDQ:
    case ZYDIS_MNEMONIC_PUNPCKLQDQ:
    case ZYDIS_MNEMONIC_PUNPCKHBW:
    case ZYDIS_MNEMONIC_PUNPCKHWD:
    case ZYDIS_MNEMONIC_PUNPCKHDQ:
    case ZYDIS_MNEMONIC_PUNPCKHQDQ:
    case ZYDIS_MNEMONIC_XORPS:
    case ZYDIS_MNEMONIC_ANDPS:
    case ZYDIS_MNEMONIC_ANDNPS:
    case ZYDIS_MNEMONIC_ORPS:
    case ZYDIS_MNEMONIC_XORPD:
    case ZYDIS_MNEMONIC_ANDPD:
    case ZYDIS_MNEMONIC_ORPD: return true;
    default: return false;
    }
}

bool sse_move(ZydisMnemonic m, bool& aligned)
{
    switch (m) {
    case ZYDIS_MNEMONIC_MOVAPS:
    case ZYDIS_MNEMONIC_MOVAPD:
    case ZYDIS_MNEMONIC_MOVDQA: aligned = true; return true;
    case ZYDIS_MNEMONIC_MOVUPS:
    case ZYDIS_MNEMONIC_MOVUPD:
    case ZYDIS_MNEMONIC_MOVDQU: aligned = false; return true;
    default: return false;
    }
}

bool is_reg(const Operand& o)
{
    return o.kind == OpKind::Gpr || o.kind == OpKind::GprHigh8;
}
bool is_rm(const Operand& o)
{
    return is_reg(o) || o.kind == OpKind::Mem;
}
bool is_rmi(const Operand& o)
{
    return is_rm(o) || o.kind == OpKind::Imm;
}
bool valid_size(unsigned s)
{
    return s == 1 || s == 2 || s == 4 || s == 8;
}

bool fits_i32(int64_t v)
{
    return v == static_cast<int32_t>(v);
}

uint64_t imm_of(const Insn& in, const Operand& o)
{
    return o.imm_index ? in.imm2 : in.imm;
}

// Which instructions are translated inline, and how.
Plan classify(const Insn& in)
{
    Plan p;
    auto mnem = static_cast<ZydisMnemonic>(in.mnemonic);
    // F3 0F 1E FA (ENDBR64) is a NOP with a REP prefix here (CET is not offered).
    if (in.flags & ((kFlagRep | kFlagRepne) * (mnem != ZYDIS_MNEMONIC_NOP)))
        return p;
    if (in.flags & kFlagLock) {
        // LOCK on a read-modify-write of memory: the same instruction with LOCK on the host
        // pointer (host atomics on guest RAM, as the interpreter does). Other forms #UD there.
        const Operand& d = in.op[0];
        bool rmw = in.nops >= 1 && d.kind == OpKind::Mem && valid_size(d.size);
        switch (mnem) {
        case ZYDIS_MNEMONIC_ADD:
        case ZYDIS_MNEMONIC_OR:
        case ZYDIS_MNEMONIC_ADC:
        case ZYDIS_MNEMONIC_SBB:
        case ZYDIS_MNEMONIC_AND:
        case ZYDIS_MNEMONIC_SUB:
        case ZYDIS_MNEMONIC_XOR:
        case ZYDIS_MNEMONIC_INC:
        case ZYDIS_MNEMONIC_DEC:
        case ZYDIS_MNEMONIC_NEG:
        case ZYDIS_MNEMONIC_NOT:
        case ZYDIS_MNEMONIC_XADD:
        case ZYDIS_MNEMONIC_CMPXCHG:
        case ZYDIS_MNEMONIC_BTS:
        case ZYDIS_MNEMONIC_BTR:
        case ZYDIS_MNEMONIC_BTC: break;
        default: rmw = false; break;
        }
        if (!rmw)
            return p;
        p.lock = true;
    }
    bool mem = in.flags & kFlagHasMem;
    if (mem && in.asize != 4 && in.asize != 8)
        return p;
    if (mem && !fits_i32(in.disp)) // 64-bit absolute (moffs) forms
        return p;
    if (mem && in.base == kRipReg && in.asize != 8)
        return p;
    const Operand& a = in.op[0];
    const Operand& b = in.op[1];
    switch (mnem) {
    case ZYDIS_MNEMONIC_NOP: p.kind = Kind::Nop; return p;
    case ZYDIS_MNEMONIC_MOV:
        if (in.nops == 2 && is_rm(a) && is_rmi(b) && valid_size(a.size)
            && !(a.kind == OpKind::Mem && b.kind == OpKind::Mem)) {
            p.kind = Kind::Mov;
            p.mem_write = a.kind == OpKind::Mem;
        } else if (in.nops == 2 && a.kind == OpKind::Gpr && a.size >= 2 && b.kind == OpKind::Seg && b.reg < 6) {
            p.kind = Kind::MovFromSeg;
        }
        break;
    case ZYDIS_MNEMONIC_ADD:
    case ZYDIS_MNEMONIC_OR:
    case ZYDIS_MNEMONIC_ADC:
    case ZYDIS_MNEMONIC_SBB:
    case ZYDIS_MNEMONIC_AND:
    case ZYDIS_MNEMONIC_SUB:
    case ZYDIS_MNEMONIC_XOR:
    case ZYDIS_MNEMONIC_CMP:
    case ZYDIS_MNEMONIC_TEST:
        if (in.nops == 2 && is_rm(a) && is_rmi(b) && valid_size(a.size)) {
            p.kind = Kind::Alu;
            p.writes = Writes::All; // AND/OR/XOR/TEST: AF (undefined) as the host leaves it
            p.reads = mnem == ZYDIS_MNEMONIC_ADC || mnem == ZYDIS_MNEMONIC_SBB;
            p.mem_write = a.kind == OpKind::Mem && mnem != ZYDIS_MNEMONIC_CMP && mnem != ZYDIS_MNEMONIC_TEST;
        }
        break;
    case ZYDIS_MNEMONIC_SHL:
    case ZYDIS_MNEMONIC_SHR:
    case ZYDIS_MNEMONIC_SAR:
    case ZYDIS_MNEMONIC_ROL:
    case ZYDIS_MNEMONIC_ROR:
    case ZYDIS_MNEMONIC_RCL:
    case ZYDIS_MNEMONIC_RCR: {
        if (in.nops != 2 || !is_rm(a) || !valid_size(a.size))
            break;
        bool by_cl = b.kind == OpKind::Gpr && b.reg == RCX && b.size == 1;
        bool by_imm = b.kind == OpKind::Imm && (imm_of(in, b) & (a.size == 8 ? 63 : 31)) != 0;
        if (!by_cl && !by_imm)
            break;
        p.kind = Kind::Shift;
        p.writes = Writes::Partial;
        p.reads = mnem == ZYDIS_MNEMONIC_RCL || mnem == ZYDIS_MNEMONIC_RCR;
        p.mem_write = a.kind == OpKind::Mem;
        break;
    }
    case ZYDIS_MNEMONIC_INC:
    case ZYDIS_MNEMONIC_DEC:
    case ZYDIS_MNEMONIC_NEG:
    case ZYDIS_MNEMONIC_NOT:
        if (in.nops >= 1 && is_rm(a) && valid_size(a.size)) {
            p.kind = Kind::Unary;
            p.writes = mnem == ZYDIS_MNEMONIC_NOT ? Writes::None
                : mnem == ZYDIS_MNEMONIC_NEG      ? Writes::All
                                                  : Writes::Partial;
            p.mem_write = a.kind == OpKind::Mem;
        }
        break;
    case ZYDIS_MNEMONIC_MOVZX:
    case ZYDIS_MNEMONIC_MOVSX:
    case ZYDIS_MNEMONIC_MOVSXD:
        if (in.nops == 2 && a.kind == OpKind::Gpr && (a.size == 2 || a.size == 4 || a.size == 8) && is_rm(b)
            && b.size < a.size && !(b.kind == OpKind::GprHigh8 && a.size == 8)
            && (mnem != ZYDIS_MNEMONIC_MOVSXD || (a.size == 8 && b.size == 4)))
            p.kind = Kind::Extend;
        break;
    case ZYDIS_MNEMONIC_LEA:
        if (in.nops == 2 && a.kind == OpKind::Gpr && (a.size == 2 || a.size == 4 || a.size == 8)
            && b.kind == OpKind::Mem && !(in.base == kRipReg && in.asize != 8)) {
            p.kind = Kind::Lea;
            return p; // no memory access
        }
        break;
    case ZYDIS_MNEMONIC_BT:
    case ZYDIS_MNEMONIC_BTS:
    case ZYDIS_MNEMONIC_BTR:
    case ZYDIS_MNEMONIC_BTC:
        if (in.nops == 2 && a.kind == OpKind::Gpr && a.size >= 2 && (b.kind == OpKind::Gpr || b.kind == OpKind::Imm)) {
            p.kind = Kind::Bt;
            p.writes = Writes::Partial;
        } else if (in.nops == 2 && a.kind == OpKind::Mem && a.size >= 2 && valid_size(a.size)
            && (b.kind == OpKind::Imm || (b.kind == OpKind::Gpr && b.size == a.size && in.asize == 8))) {
            p.kind = Kind::BtMem;
            p.writes = Writes::Partial;
            p.mem_write = mnem != ZYDIS_MNEMONIC_BT;
        }
        break;
    case ZYDIS_MNEMONIC_XCHG:
        if (in.nops == 2 && a.kind == OpKind::Gpr && b.kind == OpKind::Gpr && a.size == b.size && a.size >= 2)
            p.kind = Kind::Xchg;
        else if (in.nops == 2 && ((a.kind == OpKind::Mem && is_reg(b)) || (is_reg(a) && b.kind == OpKind::Mem))
            && a.size == b.size && valid_size(a.size)) {
            p.kind = Kind::Atomic; // implicitly locked
            p.mem_write = true;
        }
        break;
    case ZYDIS_MNEMONIC_XADD:
    case ZYDIS_MNEMONIC_CMPXCHG:
        if (in.nops >= 2 && a.kind == OpKind::Mem && is_reg(b) && a.size == b.size && valid_size(a.size)) {
            p.kind = Kind::Atomic;
            p.writes = Writes::All;
            p.mem_write = true;
        }
        break;
    case ZYDIS_MNEMONIC_BSWAP:
        if (in.nops == 1 && a.kind == OpKind::Gpr && a.size >= 4)
            p.kind = Kind::Bswap;
        break;
    case ZYDIS_MNEMONIC_CBW:
    case ZYDIS_MNEMONIC_CWDE:
    case ZYDIS_MNEMONIC_CDQE:
    case ZYDIS_MNEMONIC_CWD:
    case ZYDIS_MNEMONIC_CDQ:
    case ZYDIS_MNEMONIC_CQO: p.kind = Kind::Convert; return p;
    case ZYDIS_MNEMONIC_PUSH:
        if (in.osize == 8 && in.nops >= 1 && ((a.kind == OpKind::Gpr && a.size == 8) || a.kind == OpKind::Imm)) {
            p.kind = Kind::Push;
            p.can_fault = true;
        } else if (in.osize == 8 && in.nops >= 1 && a.kind == OpKind::Mem && a.size == 8) {
            p.kind = Kind::PushMem;
            p.can_fault = true;
        }
        return p;
    case ZYDIS_MNEMONIC_PUSHFQ:
        if (in.osize == 8) {
            p.kind = Kind::Pushf;
            p.reads = true;
            p.can_fault = true;
        }
        return p;
    case ZYDIS_MNEMONIC_LEAVE:
        if (in.osize == 8) {
            p.kind = Kind::Leave;
            p.can_fault = true;
        }
        return p;
    case ZYDIS_MNEMONIC_LFENCE:
    case ZYDIS_MNEMONIC_MFENCE:
    case ZYDIS_MNEMONIC_SFENCE: p.kind = Kind::Fence; return p;
    case ZYDIS_MNEMONIC_PREFETCH:
    case ZYDIS_MNEMONIC_PREFETCHNTA:
    case ZYDIS_MNEMONIC_PREFETCHT0:
    case ZYDIS_MNEMONIC_PREFETCHT1:
    case ZYDIS_MNEMONIC_PREFETCHT2:
    case ZYDIS_MNEMONIC_PREFETCHW:
        // A hint: never faults, whatever the address.
        p.kind = Kind::Nop;
        return p;
    case ZYDIS_MNEMONIC_CLD:
    case ZYDIS_MNEMONIC_STD: p.kind = Kind::FlagDf; return p;
    case ZYDIS_MNEMONIC_CMPXCHG16B:
        if (in.nops >= 1 && a.kind == OpKind::Mem && a.size == 16) {
            p.kind = Kind::Cmpxchg16b;
            p.writes = Writes::Partial; // ZF only
            p.mem_write = true;
            p.aligned = true; // #GP unless 16-byte aligned
        }
        break;
    case ZYDIS_MNEMONIC_SHLD:
    case ZYDIS_MNEMONIC_SHRD:
        if (in.nops == 3 && is_rm(a) && (a.size == 4 || a.size == 8) && b.kind == OpKind::Gpr && b.size == a.size
            && in.op[2].kind == OpKind::Imm && (imm_of(in, in.op[2]) & (a.size == 8 ? 63 : 31)) != 0) {
            p.kind = Kind::DoubleShift;
            p.writes = Writes::Partial; // a zero count (excluded) would leave them all
            p.mem_write = a.kind == OpKind::Mem;
        }
        break;
    case ZYDIS_MNEMONIC_STI:
        p.kind = Kind::Sti; // emit_block makes it Generic when nothing follows it in the block
        p.can_fault = true;
        return p;
    case ZYDIS_MNEMONIC_CLI:
        p.kind = Kind::Cli; // #GP above CPL 0 (CPL <= IOPL): the handler decides
        p.can_fault = true;
        return p;
    case ZYDIS_MNEMONIC_SWAPGS:
        p.kind = Kind::Swapgs; // #GP above CPL 0
        p.can_fault = true;
        return p;
    case ZYDIS_MNEMONIC_POP:
        if (in.osize == 8 && in.nops >= 1 && a.kind == OpKind::Gpr && a.size == 8) {
            p.kind = Kind::Pop;
            p.can_fault = true;
        }
        return p;
    case ZYDIS_MNEMONIC_JMP:
    case ZYDIS_MNEMONIC_CALL: {
        bool call = mnem == ZYDIS_MNEMONIC_CALL;
        if ((in.flags & kFlagRelBranch) && in.osize == 8) {
            p.kind = call ? Kind::Call : Kind::Jmp;
            p.can_fault = true;
        } else if (in.opmap == 0 && in.opcode == 0xff && in.modrm_reg == (call ? 2 : 4) && in.osize == 8 && in.nops >= 1
            && (a.kind == OpKind::Gpr || a.kind == OpKind::Mem) && a.size == 8) {
            p.kind = call ? Kind::CallInd : Kind::JmpInd;
            p.can_fault = true;
        }
        return p;
    }
    case ZYDIS_MNEMONIC_MUL:
    case ZYDIS_MNEMONIC_DIV:
    case ZYDIS_MNEMONIC_IMUL:
        if (in.opmap == 0 && (in.opcode == 0xf6 || in.opcode == 0xf7) && in.nops >= 1 && is_rm(a) && valid_size(a.size)
            && (mnem != ZYDIS_MNEMONIC_IMUL || in.modrm_reg == 5)) {
            p.kind = Kind::MulDiv;
            p.writes = mnem == ZYDIS_MNEMONIC_DIV ? Writes::None : Writes::Partial; // DIV: all undefined
            if (mnem == ZYDIS_MNEMONIC_DIV)
                p.can_fault = true; // #DE
            break;
        }
        if (mnem != ZYDIS_MNEMONIC_IMUL)
            break;
        if (in.opmap == 1 && in.opcode == 0xaf && in.nops == 2 && a.kind == OpKind::Gpr && a.size >= 2 && is_rm(b)
            && b.kind != OpKind::GprHigh8) {
            p.kind = Kind::Imul;
            p.writes = Writes::Partial;
        } else if (in.opmap == 0 && (in.opcode == 0x69 || in.opcode == 0x6b) && in.nops == 3 && a.kind == OpKind::Gpr
            && a.size >= 2 && is_rm(b) && b.kind != OpKind::GprHigh8 && in.op[2].kind == OpKind::Imm) {
            p.kind = Kind::Imul;
            p.writes = Writes::Partial;
        }
        break;
    case ZYDIS_MNEMONIC_BSF:
    case ZYDIS_MNEMONIC_BSR:
        if (in.nops == 2 && a.kind == OpKind::Gpr && a.size >= 2 && is_rm(b) && b.kind != OpKind::GprHigh8
            && b.size == a.size) {
            p.kind = Kind::BitScan;
            p.writes = Writes::Partial;
        }
        break;
    case ZYDIS_MNEMONIC_RET:
        if (in.opcode == 0xc3 && in.opmap == 0 && in.osize == 8) {
            p.kind = Kind::Ret;
            p.can_fault = true;
        }
        return p;
    default: {
        bool aligned = false;
        const bool xa = a.kind == OpKind::Xmm, xb = b.kind == OpKind::Xmm;
        const bool m16a = a.kind == OpKind::Mem && a.size == 16, m16b = b.kind == OpKind::Mem && b.size == 16;
        if (sse_binary(mnem) && in.nops == 2 && xa && (xb || m16b)) {
            p.kind = Kind::Sse;
            p.aligned = true;
        } else if (sse_move(mnem, aligned) && in.nops == 2 && ((xa && (xb || m16b)) || (m16a && xb))) {
            p.kind = Kind::Sse;
            p.aligned = aligned;
            p.mem_write = m16a;
        } else if (mnem == ZYDIS_MNEMONIC_PSHUFD && in.nops == 3 && xa && (xb || m16b)
            && in.op[2].kind == OpKind::Imm) {
            p.kind = Kind::Sse;
            p.aligned = true;
        } else if (mnem == ZYDIS_MNEMONIC_PMOVMSKB && in.nops == 2 && a.kind == OpKind::Gpr && a.size >= 4 && xb) {
            p.kind = Kind::Sse;
        } else if ((mnem == ZYDIS_MNEMONIC_MOVD || mnem == ZYDIS_MNEMONIC_MOVQ) && in.nops == 2
            && ((xa && (b.kind == OpKind::Gpr || b.kind == OpKind::Mem || xb))
                || ((a.kind == OpKind::Gpr || a.kind == OpKind::Mem) && xb))
            && !(xa && xb && mnem == ZYDIS_MNEMONIC_MOVD)) {
            unsigned size = xa ? (xb ? 8 : b.size) : a.size;
            if (size == 4 || size == 8) {
                p.kind = Kind::Sse;
                p.mem_write = a.kind == OpKind::Mem;
            }
        }
        if (p.kind == Kind::Sse) {
            p.can_fault = true; // #UD/#NM from CR0/CR4, #GP, #PF
            break;
        }
    }
        if ((in.flags & kFlagRelBranch) && in.cond && in.opmap <= 1 && in.osize == 8
            && ((in.opmap == 0 && (in.opcode & 0xf0) == 0x70) || (in.opmap == 1 && (in.opcode & 0xf0) == 0x80))) {
            p.kind = Kind::Jcc;
            p.reads = true;
            p.can_fault = true;
        } else if ((in.flags & kFlagRelBranch) && in.opmap <= 1 && in.osize == 8
            && ((in.opmap == 0 && (in.opcode & 0xf0) == 0x70) || (in.opmap == 1 && (in.opcode & 0xf0) == 0x80))) {
            p.kind = Kind::Jcc; // cond 0 (JO)
            p.reads = true;
            p.can_fault = true;
        } else if (in.opmap == 1 && (in.opcode & 0xf0) == 0x40 && in.nops == 2 && a.kind == OpKind::Gpr && a.size >= 2
            && is_rm(in.op[1]) && in.op[1].kind != OpKind::GprHigh8) {
            p.kind = Kind::Cmov;
            p.reads = true;
        } else if (in.opmap == 1 && (in.opcode & 0xf0) == 0x90 && in.nops >= 1 && is_rm(a) && a.size == 1) {
            p.kind = Kind::Setcc;
            p.reads = true;
            p.mem_write = a.kind == OpKind::Mem;
        }
        break;
    }
    if (p.kind != Kind::Generic && mem)
        p.can_fault = true;
    if (p.kind == Kind::Generic)
        p = Plan {};
    return p;
}

} // namespace

class JitEmitter : public Xbyak::CodeGenerator {
public:
    JitEmitter()
        : Xbyak::CodeGenerator(256 * 1024, Xbyak::DontSetProtectRWE)
    {
    }

    EmittedCode stubs(const CpuLayout& l)
    {
        reset();
        // void entry(Cpu* rdi, const void* code rsi)
        push(rbx);
        push(rbp);
        push(r12);
        push(r13);
        push(r14);
        push(r15);
        sub(rsp, 8); // rsp = CFA - 64, 16-byte aligned at calls
        mov(rbx, rdi);
        mov(rax, qword[rbx + l.rip]); // blocks start with rax = their RIP
        jmp(rsi);
        align(16);
        m_exit_offset = getSize();
        add(rsp, 8);
        pop(r15);
        pop(r14);
        pop(r13);
        pop(r12);
        pop(rbp);
        pop(rbx);
        ret();
        return EmittedCode { getCode(), getSize() };
    }

    EmittedCode block(const CpuLayout& layout, const Block& b, bool user, std::vector<LinkSlot>& slots);
    size_t exit_offset() const { return m_exit_offset; }

private:
    size_t m_exit_offset { 0 };

    // Guest registers cached in host registers for the block (callee-saved: they survive calls).
    static constexpr unsigned kCacheRegs = 4;
    const Xbyak::Reg64& cache_host(unsigned i) const
    {
        switch (i) {
        case 0: return rbp;
        case 1: return r13;
        case 2: return r14;
        default: return r15;
        }
    }
    std::array<int8_t, 16> m_cached {}; // guest register -> cache slot, or -1
    std::array<uint8_t, kCacheRegs> m_cached_reg {};
    unsigned m_ncached { 0 };
    uint16_t m_dirty { 0 }; // guest registers whose cached value is newer than Cpu::gpr

    void gload(const Xbyak::Reg64& r, unsigned g)
    {
        if (m_cached[g] >= 0)
            mov(r, cache_host(static_cast<unsigned>(m_cached[g])));
        else
            mov(r, gpr(g));
    }
    void gstore(unsigned g, const Xbyak::Reg64& r)
    {
        if (m_cached[g] >= 0) {
            mov(cache_host(static_cast<unsigned>(m_cached[g])), r);
            m_dirty = static_cast<uint16_t>(m_dirty | (1u << g));
        } else {
            mov(gpr(g), r);
        }
    }
    // Cpu::gpr := the cached registers in `mask`.
    void write_back(uint16_t mask)
    {
        for (unsigned i = 0; i < m_ncached; ++i)
            if (mask & (1u << m_cached_reg[i]))
                mov(gpr(m_cached_reg[i]), cache_host(i));
    }
    // The cached registers := Cpu::gpr (after a handler ran).
    void reload()
    {
        for (unsigned i = 0; i < m_ncached; ++i)
            mov(cache_host(i), gpr(m_cached_reg[i]));
    }
    struct Slow {
        Xbyak::Label entry;
        Xbyak::Label resume;
        unsigned index;
        uint32_t offset;
        bool ends_block; // the instruction is the block's branch: exit after the handler
        bool materialize;
        uint16_t dirty; // cached registers to write back before the handler
        bool flags_r9; // the flags are in r9 (store_r9_flags first)
        bool r9_after; // the code it resumes keeps the flags in r9 (reload r9 from Cpu::lf)
    };

    const CpuLayout* m_l { nullptr };
    bool m_user { false };
    bool m_lf_host { false }; // Cpu::lf.op is known to be Host here
    bool m_flags_r9 { false }; // the current flags are in r9, not in Cpu::lf
    std::vector<Slow> m_slow;
    std::vector<std::pair<Xbyak::Label, unsigned>> m_exits; // stop_block exits: count

    Xbyak::Address gpr(unsigned r) { return qword[rbx + m_l->gpr + 8 * static_cast<int>(r)]; }
    Xbyak::Address field64(int32_t off) { return qword[rbx + off]; }

    static Xbyak::Reg sized(const Xbyak::Reg64& r, unsigned size)
    {
        switch (size) {
        case 1: return r.cvt8();
        case 2: return r.cvt16();
        case 4: return r.cvt32();
        default: return r;
        }
    }
    // AH/CH for rax/rcx.
    Xbyak::Reg high8(const Xbyak::Reg64& r) { return r.getIdx() == 0 ? Xbyak::Reg(ah) : Xbyak::Reg(ch); }
    Xbyak::Address mem(unsigned size)
    {
        switch (size) {
        case 1: return byte[rdx];
        case 2: return word[rdx];
        case 4: return dword[rdx];
        default: return qword[rdx];
        }
    }

    // Loads guest operand `o` (register kinds) into host register `r` (the whole guest register);
    // returns the sized host operand.
    Xbyak::Reg load_reg(const Operand& o, const Xbyak::Reg64& r)
    {
        gload(r, o.reg);
        return o.kind == OpKind::GprHigh8 ? high8(r) : sized(r, o.size);
    }
    void store_reg(const Operand& o, const Xbyak::Reg64& r) { gstore(o.reg, r); }

    static constexpr size_t kMaxLinks = 4;
    struct Link {
        Xbyak::Label slot;
        Xbyak::Label stub;
    };
    const Block* m_block { nullptr };
    unsigned m_count { 0 }; // the block's instructions this translation covers (see Kind::Sti)
    Xbyak::Label m_out; // to the exit stub
    Xbyak::Label m_out_rax; // c.rip := rax, then m_out
    Xbyak::Label m_lookup_rax; // c.rip := rax, then m_lookup
    Xbyak::Label m_lookup; // jit_link(c, cache, nullptr) and on, or out
    std::vector<Link> m_links;
    std::vector<LinkSlot>* m_slots { nullptr };

    Xbyak::Label& exit_label(unsigned count)
    {
        for (auto& e : m_exits)
            if (e.second == count)
                return e.first;
        m_exits.emplace_back(Xbyak::Label(), count);
        return m_exits.back().first;
    }

    void call_abs(const void* fn)
    {
        mov(rax, reinterpret_cast<uint64_t>(fn));
        call(rax);
    }

    void set_rips(uint32_t off, uint32_t len)
    {
        lea(rax, ptr[r12 + off]);
        mov(field64(m_l->insn_start), rax);
        lea(rax, ptr[r12 + (off + len)]);
        mov(field64(m_l->rip), rax);
    }

    void call_handler(const Insn& in, uint32_t off, bool slow = false)
    {
        if (g_jit_stats) {
            mov(rax, reinterpret_cast<uint64_t>(form_counter(in, slow)));
            lock();
            inc(qword[rax]);
        }
        set_rips(off, in.length);
        mov(rdi, rbx);
        mov(rsi, reinterpret_cast<uint64_t>(&in));
        call_abs(reinterpret_cast<const void*>(in.exec));
    }

    void materialize_check()
    {
        if (m_lf_host)
            return;
        Xbyak::Label done;
        cmp(byte[rbx + m_l->lf_op], static_cast<uint8_t>(FlagOp::Host));
        je(done, T_NEAR);
        mov(rdi, rbx);
        call_abs(reinterpret_cast<const void*>(&jit_flags_to_host));
        L(done);
        m_lf_host = true;
    }

    // Host flags := guest arithmetic flags (lf.op Host: the image in lf.res).
    void load_flags()
    {
        mov(ecx, dword[rbx + m_l->lf_res]);
        shr(ecx, 11);
        and_(ecx, 1);
        add(cl, 0x7f); // OF = guest OF
        mov(ah, byte[rbx + m_l->lf_res]);
        sahf(); // SF ZF AF PF CF
    }

    // The guest's arithmetic flags := the host's.
    // r9 (AH = SF ZF AF PF CF as in RFLAGS, AL = OF) -> the host-image form in Cpu::lf.
    void store_r9_flags()
    {
        mov(eax, r9d);
        shr(eax, 8);
        and_(eax, 0xd5);
        mov(ecx, r9d);
        and_(ecx, 1);
        shl(ecx, 11);
        or_(eax, ecx);
        or_(eax, 2);
        mov(qword[rbx + m_l->lf_res], rax);
        mov(byte[rbx + m_l->lf_op], static_cast<uint8_t>(FlagOp::Host));
    }

    void capture_flags()
    {
        pushfq();
        pop(qword[rbx + m_l->lf_res]);
        if (!m_lf_host)
            mov(byte[rbx + m_l->lf_op], static_cast<uint8_t>(FlagOp::Host));
        m_lf_host = true;
    }

    // Effective address (no segment) of the memory operand into rsi, truncated to the address size.
    void effective_address(const Insn& in, uint32_t next_off)
    {
        if (in.base == kRipReg) {
            lea(rsi, ptr[r12 + static_cast<int32_t>(next_off + in.disp)]);
            return;
        }
        int32_t disp = static_cast<int32_t>(in.disp);
        if (in.base != kNoReg && in.index != kNoReg) {
            gload(rsi, in.base);
            gload(rdi, in.index);
            lea(rsi, ptr[rsi + rdi * in.scale + disp]);
        } else if (in.base != kNoReg) {
            gload(rsi, in.base);
            if (disp)
                lea(rsi, ptr[rsi + disp]);
        } else if (in.index != kNoReg) {
            gload(rdi, in.index);
            lea(rsi, ptr[rdi * in.scale + disp]);
        } else {
            mov(rsi, static_cast<uint64_t>(static_cast<int64_t>(disp)));
        }
        if (in.asize == 4)
            mov(esi, esi);
    }

    // rdx := host pointer of the memory operand (`size` bytes), or a jump to `slow`.
    void memory_operand(const Insn& in, uint32_t next_off, unsigned size, bool write, Xbyak::Label& slow)
    {
        effective_address(in, next_off);
        if (in.seg == FS || in.seg == GS)
            add(rsi, field64(m_l->segbase + 8 * in.seg));
        tlb_lookup(size, write, slow);
    }

    // rsi = linear address; rdx := host pointer or a jump to `slow`. Clobbers rdi, r8.
    void tlb_lookup(unsigned size, bool write, Xbyak::Label& slow)
    {
        int32_t base = m_l->tlb[m_user ? 1 : 0];
        mov(edi, esi);
        shr(edi, 12);
        and_(edi, kTlbEntries - 1);
        imul(edi, edi, static_cast<int>(sizeof(TlbEntry)));
        lea(r8, ptr[rsi + static_cast<int>(size - 1)]);
        and_(r8, -4096);
        int32_t tag = write ? static_cast<int32_t>(offsetof(TlbEntry, tag_write))
                            : static_cast<int32_t>(offsetof(TlbEntry, tag_read));
        cmp(r8, qword[rbx + rdi + base + tag]);
        jne(slow, T_NEAR);
        mov(rdx, qword[rbx + rdi + base + static_cast<int32_t>(offsetof(TlbEntry, addend))]);
        add(rdx, rsi);
    }

    // PUSH of rcx (64-bit stack): RSP - 8 looked up for writing, or a jump to `slow` with nothing
    // changed. Keeps rax and rcx.
    void push_rcx(Xbyak::Label& slow)
    {
        gload(rsi, RSP);
        sub(rsi, 8);
        tlb_lookup(8, true, slow);
        mov(qword[rdx], rcx);
        gstore(RSP, rsi);
    }

    // rax = target; jumps to `slow` unless canonical. Clobbers rcx.
    void check_canonical(Xbyak::Label& slow)
    {
        mov(rcx, rax);
        shl(rcx, 16);
        sar(rcx, 16);
        cmp(rcx, rax);
        jne(slow, T_NEAR);
    }

    // Block exits: Cpu::jit_left counts the budget down; every exit leaves c.rip at the next
    // instruction to run and Cpu::gpr up to date.
    //
    // Static target (rax = its RIP, `target` its offset from the block's start): with budget
    // left, no attention request and no new code page anywhere, go straight on to the target's
    // translation: through a slot patched on first use when the target is in this block's first
    // page (then it is in the same physical page for as long as this block is valid: see
    // jit_link), else through a look-up.
    void static_exit(unsigned count, int64_t target)
    {
        write_back(m_dirty);
        chain_checks(count, m_out_rax);
        int64_t in_page = static_cast<int64_t>(m_block->gpa & 0xfff) + target;
        if (in_page >= 0 && in_page < 4096 && m_links.size() < kMaxLinks) {
            m_links.push_back(Link {});
            Link& link = m_links.back();
            jmp(ptr[rip + link.slot]); // with rax = the target's RIP
        } else {
            jmp(m_lookup_rax, T_NEAR);
        }
    }
    // Dynamic target: c.rip already holds it.
    void dynamic_exit(unsigned count)
    {
        write_back(m_dirty);
        chain_checks(count, m_out);
        cmp(byte[rbx + m_l->stop_block], 0);
        jne(m_out, T_NEAR);
        jmp(m_lookup, T_NEAR);
    }
    // Counts the block's instructions off Cpu::jit_left; leaves unless more may run now.
    void chain_checks(unsigned count, Xbyak::Label& out)
    {
        sub(qword[rbx + m_l->jit_left], count);
        jbe(out, T_NEAR);
        // A new code page raises attention on every other vCPU (SoftMachine::watch_code_epoch);
        // this vCPU's own new code pages come from jit_link or the execution loop, which sync.
        cmp(byte[rbx + m_l->attention], 0);
        jne(out, T_NEAR);
    }

    // BT BTS BTR BTC: `s` is a register or an 8-bit immediate.
    template<typename Src>
    void bit_op(ZydisMnemonic m, const Xbyak::Operand& d, const Src& s)
    {
        switch (m) {
        case ZYDIS_MNEMONIC_BT: bt(d, s); break;
        case ZYDIS_MNEMONIC_BTS: bts(d, s); break;
        case ZYDIS_MNEMONIC_BTR: btr(d, s); break;
        default: btc(d, s); break;
        }
    }

    void alu_op(ZydisMnemonic m, const Xbyak::Operand& d, const Xbyak::Operand& s)
    {
        switch (m) {
        case ZYDIS_MNEMONIC_ADD: add(d, s); break;
        case ZYDIS_MNEMONIC_OR: or_(d, s); break;
        case ZYDIS_MNEMONIC_ADC: adc(d, s); break;
        case ZYDIS_MNEMONIC_SBB: sbb(d, s); break;
        case ZYDIS_MNEMONIC_AND: and_(d, s); break;
        case ZYDIS_MNEMONIC_SUB: sub(d, s); break;
        case ZYDIS_MNEMONIC_XOR: xor_(d, s); break;
        case ZYDIS_MNEMONIC_CMP: cmp(d, s); break;
        case ZYDIS_MNEMONIC_TEST: test(d, static_cast<const Xbyak::Reg&>(s)); break;
        case ZYDIS_MNEMONIC_MOV: mov(d, s); break;
        default: throw Xbyak::Error(Xbyak::ERR_BAD_COMBINATION);
        }
    }
    // `value` is the guest immediate sign-extended to 64 bits for 8-byte operations, masked to
    // the operand size for the others.
    void alu_imm(ZydisMnemonic m, const Xbyak::Operand& d, uint64_t value)
    {
        auto imm = static_cast<uint32_t>(value);
        switch (m) {
        case ZYDIS_MNEMONIC_ADD: add(d, imm); break;
        case ZYDIS_MNEMONIC_OR: or_(d, imm); break;
        case ZYDIS_MNEMONIC_ADC: adc(d, imm); break;
        case ZYDIS_MNEMONIC_SBB: sbb(d, imm); break;
        case ZYDIS_MNEMONIC_AND: and_(d, imm); break;
        case ZYDIS_MNEMONIC_SUB: sub(d, imm); break;
        case ZYDIS_MNEMONIC_XOR: xor_(d, imm); break;
        case ZYDIS_MNEMONIC_CMP: cmp(d, imm); break;
        case ZYDIS_MNEMONIC_TEST: test(d, imm); break;
        case ZYDIS_MNEMONIC_MOV: mov(d, value); break;
        default: throw Xbyak::Error(Xbyak::ERR_BAD_COMBINATION);
        }
    }
    void shift_op(ZydisMnemonic m, const Xbyak::Operand& d, int count /* -1: CL */)
    {
        auto go = [&](auto&& f) {
            if (count < 0)
                f(d, cl);
            else
                f(d, count);
        };
        switch (m) {
        case ZYDIS_MNEMONIC_SHL: go([&](auto& x, auto y) { shl(x, y); }); break;
        case ZYDIS_MNEMONIC_SHR: go([&](auto& x, auto y) { shr(x, y); }); break;
        case ZYDIS_MNEMONIC_SAR: go([&](auto& x, auto y) { sar(x, y); }); break;
        case ZYDIS_MNEMONIC_ROL: go([&](auto& x, auto y) { rol(x, y); }); break;
        case ZYDIS_MNEMONIC_ROR: go([&](auto& x, auto y) { ror(x, y); }); break;
        case ZYDIS_MNEMONIC_RCL: go([&](auto& x, auto y) { rcl(x, y); }); break;
        case ZYDIS_MNEMONIC_RCR: go([&](auto& x, auto y) { rcr(x, y); }); break;
        default: throw Xbyak::Error(Xbyak::ERR_BAD_COMBINATION);
        }
    }
    void jcc_to(unsigned cc, Xbyak::Label& l)
    {
        switch (cc) {
        case 0: jo(l, T_NEAR); break;
        case 1: jno(l, T_NEAR); break;
        case 2: jb(l, T_NEAR); break;
        case 3: jnb(l, T_NEAR); break;
        case 4: jz(l, T_NEAR); break;
        case 5: jnz(l, T_NEAR); break;
        case 6: jbe(l, T_NEAR); break;
        case 7: jnbe(l, T_NEAR); break;
        case 8: js(l, T_NEAR); break;
        case 9: jns(l, T_NEAR); break;
        case 10: jp(l, T_NEAR); break;
        case 11: jnp(l, T_NEAR); break;
        case 12: jl(l, T_NEAR); break;
        case 13: jnl(l, T_NEAR); break;
        case 14: jle(l, T_NEAR); break;
        default: jnle(l, T_NEAR); break;
        }
    }
    void cmov_op(unsigned cc, const Xbyak::Reg& d, const Xbyak::Operand& s)
    {
        switch (cc) {
        case 0: cmovo(d, s); break;
        case 1: cmovno(d, s); break;
        case 2: cmovb(d, s); break;
        case 3: cmovnb(d, s); break;
        case 4: cmovz(d, s); break;
        case 5: cmovnz(d, s); break;
        case 6: cmovbe(d, s); break;
        case 7: cmovnbe(d, s); break;
        case 8: cmovs(d, s); break;
        case 9: cmovns(d, s); break;
        case 10: cmovp(d, s); break;
        case 11: cmovnp(d, s); break;
        case 12: cmovl(d, s); break;
        case 13: cmovnl(d, s); break;
        case 14: cmovle(d, s); break;
        default: cmovnle(d, s); break;
        }
    }
    void set_op(unsigned cc, const Xbyak::Operand& d)
    {
        switch (cc) {
        case 0: seto(d); break;
        case 1: setno(d); break;
        case 2: setb(d); break;
        case 3: setnb(d); break;
        case 4: setz(d); break;
        case 5: setnz(d); break;
        case 6: setbe(d); break;
        case 7: setnbe(d); break;
        case 8: sets(d); break;
        case 9: setns(d); break;
        case 10: setp(d); break;
        case 11: setnp(d); break;
        case 12: setl(d); break;
        case 13: setnl(d); break;
        case 14: setle(d); break;
        default: setnle(d); break;
        }
    }

    // GPR `a` := op(a, b) for a register or memory source `b` (memory: rdx, looked up before);
    // the old value of `a` is loaded first when the operation keeps some of it.
    template<typename F>
    void rm_to_reg(const Operand& a, const Operand& b, bool load_dst, F&& op)
    {
        if (load_dst)
            gload(rax, a.reg);
        Xbyak::Reg d = sized(rax, a.size);
        if (b.kind == OpKind::Mem)
            op(d, mem(b.size));
        else
            op(d, load_reg(b, rcx));
        store_reg(a, rax);
    }

    Xbyak::Address xmm_of(unsigned i) { return xword[rbx + m_l->fx + 160 + 16 * static_cast<int>(i)]; }

    // SSE (after the CR0/CR4 checks; rdx = host pointer of an aligned-if-needed memory operand).
    void sse_insn(const Insn& in)
    {
        const auto m = static_cast<ZydisMnemonic>(in.mnemonic);
        const Operand& a = in.op[0];
        const Operand& b = in.op[1];
        if (m == ZYDIS_MNEMONIC_PMOVMSKB) {
            movdqu(xmm1, xmm_of(b.reg));
            pmovmskb(eax, xmm1);
            gstore(a.reg, rax); // zero-extended to 64 bits
            return;
        }
        if (m == ZYDIS_MNEMONIC_MOVD || m == ZYDIS_MNEMONIC_MOVQ) {
            bool q = m == ZYDIS_MNEMONIC_MOVQ;
            if (a.kind == OpKind::Xmm) {
                if (b.kind == OpKind::Xmm)
                    movq(xmm0, xmm_of(b.reg)); // low quadword, upper zeroed
                else if (b.kind == OpKind::Mem)
                    q ? movq(xmm0, qword[rdx]) : movd(xmm0, dword[rdx]);
                else {
                    gload(rax, b.reg);
                    q ? movq(xmm0, rax) : movd(xmm0, eax);
                }
                movdqu(xmm_of(a.reg), xmm0);
            } else {
                movdqu(xmm0, xmm_of(b.reg));
                if (a.kind == OpKind::Mem) {
                    q ? movq(qword[rdx], xmm0) : movd(dword[rdx], xmm0);
                } else {
                    q ? movq(rax, xmm0) : movd(eax, xmm0);
                    gstore(a.reg, rax);
                }
            }
            return;
        }
        bool aligned = false;
        if (sse_move(m, aligned)) {
            if (a.kind == OpKind::Mem) {
                movdqu(xmm0, xmm_of(b.reg));
                movdqu(xword[rdx], xmm0);
            } else {
                movdqu(xmm0, b.kind == OpKind::Mem ? xword[rdx] : xmm_of(b.reg));
                movdqu(xmm_of(a.reg), xmm0);
            }
            return;
        }
        movdqu(xmm0, xmm_of(a.reg));
        Xbyak::Address src = b.kind == OpKind::Mem ? xword[rdx] : xmm_of(b.reg);
        if (b.kind != OpKind::Mem) {
            movdqu(xmm1, src);
        }
        const Xbyak::Operand& s1 = b.kind == OpKind::Mem ? static_cast<const Xbyak::Operand&>(src)
                                                         : static_cast<const Xbyak::Operand&>(xmm1);
        switch (m) {
        case ZYDIS_MNEMONIC_PXOR: pxor(xmm0, s1); break;
        case ZYDIS_MNEMONIC_POR: por(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PAND: pand(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PANDN: pandn(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PCMPEQB: pcmpeqb(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PCMPEQW: pcmpeqw(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PCMPEQD: pcmpeqd(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PADDB: paddb(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PADDW: paddw(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PADDD: paddd(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PADDQ: paddq(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PSUBB: psubb(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PSUBW: psubw(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PSUBD: psubd(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PSUBQ: psubq(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PMINUB: pminub(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PMAXUB: pmaxub(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PUNPCKLBW: punpcklbw(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PUNPCKLWD: punpcklwd(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PUNPCKLDQ: punpckldq(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PUNPCKLQDQ: punpcklqdq(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PUNPCKHBW: punpckhbw(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PUNPCKHWD: punpckhwd(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PUNPCKHDQ: punpckhdq(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PUNPCKHQDQ: punpckhqdq(xmm0, s1); break;
        case ZYDIS_MNEMONIC_XORPS: xorps(xmm0, s1); break;
        case ZYDIS_MNEMONIC_ANDPS: andps(xmm0, s1); break;
        case ZYDIS_MNEMONIC_ANDNPS: andnps(xmm0, s1); break;
        case ZYDIS_MNEMONIC_ORPS: orps(xmm0, s1); break;
        case ZYDIS_MNEMONIC_XORPD: xorpd(xmm0, s1); break;
        case ZYDIS_MNEMONIC_ANDPD: andpd(xmm0, s1); break;
        case ZYDIS_MNEMONIC_ORPD: orpd(xmm0, s1); break;
        case ZYDIS_MNEMONIC_PSHUFD: pshufd(xmm0, s1, static_cast<uint8_t>(imm_of(in, in.op[2]))); break;
        default: throw Xbyak::Error(Xbyak::ERR_BAD_COMBINATION);
        }
        movdqu(xmm_of(a.reg), xmm0);
    }

    // Picks the guest registers the block's inline instructions use most (at least twice).
    void choose_cached(const Block& b, const std::vector<Plan>& plans)
    {
        std::array<unsigned, 16> uses {};
        for (unsigned i = 0; i < m_count; ++i) {
            const Insn& in = b.insns[i];
            const Plan& p = plans[i];
            if (p.kind == Kind::Generic)
                continue;
            for (unsigned k = 0; k < in.nops; ++k)
                if (is_reg(in.op[k]))
                    ++uses[in.op[k].reg & 15];
            if ((in.flags & kFlagHasMem) && in.base < 16)
                ++uses[in.base];
            if ((in.flags & kFlagHasMem) && in.index < 16)
                ++uses[in.index];
            if (p.kind == Kind::Push || p.kind == Kind::Pop || p.kind == Kind::Call || p.kind == Kind::Ret
                || p.kind == Kind::PushMem || p.kind == Kind::Pushf || p.kind == Kind::Leave)
                uses[RSP] += 2;
            if (p.kind == Kind::Leave)
                ++uses[RBP];
            if (p.kind == Kind::Convert || p.kind == Kind::MulDiv)
                ++uses[RAX], ++uses[RDX];
            if (p.kind == Kind::CallInd)
                uses[RSP] += 2;
            if (p.kind == Kind::Shift)
                ++uses[RCX];
        }
        m_cached.fill(-1);
        m_ncached = 0;
        while (m_ncached < kCacheRegs) {
            unsigned best = 16;
            for (unsigned g = 0; g < 16; ++g)
                if (m_cached[g] < 0 && uses[g] >= 2 && (best == 16 || uses[g] > uses[best]))
                    best = g;
            if (best == 16)
                break;
            m_cached[best] = static_cast<int8_t>(m_ncached);
            m_cached_reg[m_ncached++] = static_cast<uint8_t>(best);
        }
    }

    // One instruction translated inline. Returns true if it ended the block (a branch).
    bool inline_insn(const Insn& in, const Plan& p, unsigned index, uint32_t off);
};

bool JitEmitter::inline_insn(const Insn& in, const Plan& p, unsigned index, uint32_t off)
{
    const auto m = static_cast<ZydisMnemonic>(in.mnemonic);
    const uint32_t next = off + in.length;
    const Operand& a = in.op[0];
    const Operand& b = in.op[1];
    const bool flags_in = p.reads || (p.writes == Writes::Partial && (p.capture || p.capture_r9));
    if (flags_in)
        materialize_check();

    Slow* slow = nullptr;
    auto need_slow = [&]() -> Xbyak::Label& {
        if (!slow) {
            m_slow.push_back(Slow {});
            slow = &m_slow.back();
            slow->index = index;
            slow->offset = off;
            slow->dirty = m_dirty;
            slow->flags_r9 = m_flags_r9;
        }
        return slow->entry;
    };

    bool has_mem = in.flags & kFlagHasMem;
    if (p.kind == Kind::Sse) {
        // What check_sse() raises: #UD (CR0.EM, no CR4.OSFXSR), #NM (CR0.TS).
        test(dword[rbx + m_l->cr0], static_cast<uint32_t>(fpu::kCr0Em | fpu::kCr0Ts));
        jnz(need_slow(), T_NEAR);
        test(dword[rbx + m_l->cr4], static_cast<uint32_t>(x86::kCr4Osfxsr));
        jz(need_slow(), T_NEAR);
    }
    // LEA and prefetches touch no memory; BT* on memory finds its own address.
    if (has_mem && p.kind != Kind::Lea && p.kind != Kind::Nop && p.kind != Kind::BtMem) {
        unsigned size = 0;
        for (unsigned i = 0; i < in.nops; ++i)
            if (in.op[i].kind == OpKind::Mem)
                size = in.op[i].size;
        if (in.base == kRipReg && !fits_i32(static_cast<int64_t>(next) + in.disp))
            throw Xbyak::Error(Xbyak::ERR_OFFSET_IS_TOO_BIG);
        memory_operand(in, next, size, p.mem_write, need_slow());
        if (p.aligned && size == 16) {
            test(esi, 15);
            jnz(need_slow(), T_NEAR);
        }
    }
    if (flags_in)
        load_flags();

    bool ends = false;
    switch (p.kind) {
    case Kind::Nop: break;
    case Kind::Mov:
    case Kind::Alu: {
        bool writes_dst = m != ZYDIS_MNEMONIC_CMP && m != ZYDIS_MNEMONIC_TEST;
        if (m == ZYDIS_MNEMONIC_MOV && a.kind == OpKind::Gpr && a.size >= 4) {
            // Whole-register (or zero-extending) move: no need for the old value.
            Xbyak::Reg d = sized(rax, a.size);
            if (b.kind == OpKind::Imm) {
                if (a.size == 8)
                    mov(rax, imm_of(in, b));
                else
                    mov(eax, static_cast<uint32_t>(imm_of(in, b)));
            } else if (b.kind == OpKind::Mem) {
                mov(d, mem(a.size));
            } else {
                Xbyak::Reg s = load_reg(b, rcx);
                mov(d, s);
            }
            store_reg(a, rax);
            break;
        }
        // Destination.
        std::optional<Xbyak::Reg> dreg;
        if (is_reg(a))
            dreg = load_reg(a, rax);
        if (b.kind == OpKind::Imm) {
            uint64_t iv = imm_of(in, b) & size_mask(a.size);
            if (a.size == 8 && !fits_i32(static_cast<int64_t>(iv)))
                throw Xbyak::Error(Xbyak::ERR_IMM_IS_TOO_BIG);
            if (dreg)
                alu_imm(m, *dreg, iv);
            else {
                if (p.lock)
                    lock();
                alu_imm(m, mem(a.size), iv);
            }
        } else if (b.kind == OpKind::Mem) {
            // reg op= [mem]; TEST's memory operand may be either one.
            if (m == ZYDIS_MNEMONIC_TEST)
                test(mem(a.size), *dreg);
            else
                alu_op(m, *dreg, mem(b.size));
        } else {
            Xbyak::Reg s = load_reg(b, rcx);
            if (dreg)
                alu_op(m, *dreg, s);
            else if (m == ZYDIS_MNEMONIC_TEST)
                test(mem(a.size), s);
            else {
                if (p.lock)
                    lock();
                alu_op(m, mem(a.size), s);
            }
        }
        if (dreg && writes_dst)
            store_reg(a, rax);
        break;
    }
    case Kind::Shift: {
        int count = -1;
        if (b.kind == OpKind::Imm)
            count = static_cast<int>(imm_of(in, b) & (a.size == 8 ? 63 : 31));
        std::optional<Xbyak::Reg> dreg;
        if (is_reg(a))
            dreg = load_reg(a, rax);
        if (count < 0)
            gload(rcx, RCX);
        if (dreg)
            shift_op(m, *dreg, count);
        else
            shift_op(m, mem(a.size), count);
        if (dreg)
            store_reg(a, rax);
        break;
    }
    case Kind::Unary: {
        auto op = [&](const Xbyak::Operand& d) {
            switch (m) {
            case ZYDIS_MNEMONIC_INC: inc(d); break;
            case ZYDIS_MNEMONIC_DEC: dec(d); break;
            case ZYDIS_MNEMONIC_NEG: neg(d); break;
            default: not_(d); break;
            }
        };
        if (is_reg(a)) {
            op(load_reg(a, rax));
            store_reg(a, rax);
        } else {
            if (p.lock)
                lock();
            op(mem(a.size));
        }
        break;
    }
    case Kind::Extend:
        rm_to_reg(a, b, a.size == 2, [&](const Xbyak::Reg& d, const Xbyak::Operand& s) {
            if (m == ZYDIS_MNEMONIC_MOVZX)
                movzx(d, s);
            else if (m == ZYDIS_MNEMONIC_MOVSX)
                movsx(d, s);
            else
                movsxd(rax, s);
        });
        break;
    case Kind::Lea: {
        if (in.base == kRipReg && !fits_i32(static_cast<int64_t>(next) + in.disp))
            throw Xbyak::Error(Xbyak::ERR_OFFSET_IS_TOO_BIG);
        effective_address(in, next);
        if (a.size == 8) {
            gstore(a.reg, rsi);
        } else if (a.size == 4) {
            mov(esi, esi);
            gstore(a.reg, rsi);
        } else {
            gload(rax, a.reg);
            mov(ax, si);
            store_reg(a, rax);
        }
        break;
    }
    case Kind::Imul:
        rm_to_reg(a, b, true, [&](const Xbyak::Reg& d, const Xbyak::Operand& s) {
            if (in.nops == 3)
                imul(d, s, static_cast<int>(static_cast<int64_t>(imm_of(in, in.op[2]))));
            else
                imul(d, s);
        });
        break;
    case Kind::Cmov:
        rm_to_reg(a, b, true, [&](const Xbyak::Reg& d, const Xbyak::Operand& s) { cmov_op(in.cond, d, s); });
        break;
    case Kind::Setcc: {
        if (is_reg(a)) {
            // Load the register after the flags: load_flags uses AH.
            Xbyak::Reg d = load_reg(a, rdx);
            Xbyak::Reg dd = a.kind == OpKind::GprHigh8 ? Xbyak::Reg(dh) : d;
            set_op(in.cond, dd);
            store_reg(a, rdx);
        } else {
            set_op(in.cond, mem(1));
        }
        break;
    }
    case Kind::Bt: {
        Xbyak::Reg d = load_reg(a, rax);
        if (b.kind == OpKind::Imm)
            bit_op(m, d, static_cast<uint8_t>(imm_of(in, b)));
        else
            bit_op(m, d, load_reg(b, rcx));
        if (m != ZYDIS_MNEMONIC_BT)
            store_reg(a, rax);
        break;
    }
    case Kind::Xchg: {
        Xbyak::Reg d = load_reg(a, rax);
        Xbyak::Reg s = load_reg(b, rcx);
        xchg(d, s);
        store_reg(a, rax);
        store_reg(b, rcx);
        break;
    }
    case Kind::Bswap: {
        gload(rax, a.reg);
        if (a.size == 8)
            bswap(rax);
        else
            bswap(eax);
        store_reg(a, rax);
        break;
    }
    case Kind::Convert:
        gload(rax, RAX);
        switch (m) {
        case ZYDIS_MNEMONIC_CBW: cbw(); break;
        case ZYDIS_MNEMONIC_CWDE: cwde(); break;
        case ZYDIS_MNEMONIC_CDQE: cdqe(); break;
        default:
            gload(rdx, RDX);
            if (m == ZYDIS_MNEMONIC_CWD)
                cwd();
            else if (m == ZYDIS_MNEMONIC_CDQ)
                cdq();
            else
                cqo();
            store_reg(Operand { OpKind::Gpr, RDX, 8, 0 }, rdx);
            break;
        }
        store_reg(Operand { OpKind::Gpr, RAX, 8, 0 }, rax);
        break;
    case Kind::Push:
        if (a.kind == OpKind::Imm)
            mov(rcx, imm_of(in, a));
        else
            gload(rcx, a.reg); // PUSH RSP pushes the value before the decrement
        push_rcx(need_slow());
        break;
    case Kind::Pop: {
        gload(rsi, RSP);
        tlb_lookup(8, false, need_slow());
        mov(rcx, qword[rdx]);
        add(rsi, 8);
        gstore(RSP, rsi);
        gstore(a.reg, rcx);
        break;
    }
    case Kind::Jcc: {
        if (!fits_i32(static_cast<int64_t>(next) + static_cast<int64_t>(in.imm)))
            throw Xbyak::Error(Xbyak::ERR_OFFSET_IS_TOO_BIG);
        Xbyak::Label taken;
        int64_t target = static_cast<int64_t>(next) + static_cast<int64_t>(in.imm);
        jcc_to(in.cond, taken);
        lea(rax, ptr[r12 + next]);
        static_exit(index + 1, next);
        L(taken);
        lea(rax, ptr[r12 + static_cast<int32_t>(target)]);
        check_canonical(need_slow());
        static_exit(index + 1, target);
        ends = true;
        break;
    }
    case Kind::Jmp:
    case Kind::Call: {
        if (!fits_i32(static_cast<int64_t>(next) + static_cast<int64_t>(in.imm)))
            throw Xbyak::Error(Xbyak::ERR_OFFSET_IS_TOO_BIG);
        lea(rax, ptr[r12 + static_cast<int32_t>(next + static_cast<int64_t>(in.imm))]);
        check_canonical(need_slow());
        if (p.kind == Kind::Call) {
            lea(rcx, ptr[r12 + next]);
            push_rcx(need_slow()); // keeps rax
        }
        static_exit(index + 1, static_cast<int64_t>(next) + static_cast<int64_t>(in.imm));
        ends = true;
        break;
    }
    case Kind::Ret: {
        gload(rsi, RSP);
        tlb_lookup(8, false, need_slow());
        mov(rax, qword[rdx]);
        check_canonical(need_slow());
        add(rsi, 8);
        gstore(RSP, rsi);
        mov(field64(m_l->rip), rax);
        dynamic_exit(index + 1);
        ends = true;
        break;
    }
    case Kind::JmpInd:
    case Kind::CallInd: {
        if (a.kind == OpKind::Mem)
            mov(rax, qword[rdx]); // memory_operand() above
        else
            gload(rax, a.reg);
        check_canonical(need_slow());
        if (p.kind == Kind::CallInd) {
            lea(rcx, ptr[r12 + next]);
            push_rcx(need_slow()); // keeps rax
        }
        mov(field64(m_l->rip), rax);
        dynamic_exit(index + 1);
        ends = true;
        break;
    }
    case Kind::MulDiv: {
        // Source into rcx (rdx is the implicit operand).
        Xbyak::Reg src = a.kind == OpKind::GprHigh8 ? Xbyak::Reg(ch) : sized(rcx, a.size);
        if (a.kind == OpKind::Mem)
            mov(src, mem(a.size));
        else
            gload(rcx, a.reg);
        gload(rax, RAX);
        if (a.size > 1)
            gload(rdx, RDX);
        if (m == ZYDIS_MNEMONIC_DIV) {
            // #DE (zero divisor, quotient too wide) when the high half is not below the divisor.
            Xbyak::Reg high = a.size == 1 ? Xbyak::Reg(ah) : sized(rdx, a.size);
            cmp(high, src);
            jae(need_slow(), T_NEAR);
            div(src);
        } else if (m == ZYDIS_MNEMONIC_MUL) {
            mul(src);
        } else {
            imul(src);
        }
        gstore(RAX, rax);
        if (a.size > 1)
            gstore(RDX, rdx);
        break;
    }
    case Kind::BitScan: // a zero source leaves the destination unchanged
        rm_to_reg(a, b, true, [&](const Xbyak::Reg& d, const Xbyak::Operand& s) {
            if (m == ZYDIS_MNEMONIC_BSF)
                bsf(d, s);
            else
                bsr(d, s);
        });
        break;
    case Kind::Sse: sse_insn(in); break;
    case Kind::Atomic: {
        const Operand& r = a.kind == OpKind::Mem ? b : a; // the register operand
        Xbyak::Reg reg = load_reg(r, rcx);
        if (m == ZYDIS_MNEMONIC_CMPXCHG) {
            gload(rax, RAX);
            if (p.lock)
                lock();
            cmpxchg(mem(r.size), reg);
            gstore(RAX, rax);
        } else {
            if (p.lock)
                lock();
            if (m == ZYDIS_MNEMONIC_XADD)
                xadd(mem(r.size), reg);
            else
                xchg(mem(r.size), reg);
            store_reg(r, rcx);
        }
        break;
    }
    case Kind::BtMem: {
        // The bit string starts at the memory operand. An immediate offset stays within the
        // operand (taken modulo its width, as the host does); a register offset is signed and
        // first moves the address by whole operands.
        const unsigned bits = a.size * 8u;
        effective_address(in, next);
        if (b.kind == OpKind::Gpr) {
            gload(r10, b.reg);
            if (a.size == 4)
                movsxd(r10, r10d);
            else if (a.size == 2)
                movsx(r10, r10w);
            mov(rdi, r10);
            sar(rdi, a.size == 8 ? 6 : a.size == 4 ? 5 : 4);
            lea(rsi, ptr[rsi + rdi * a.size]);
            and_(r10d, bits - 1);
        }
        if (in.seg == FS || in.seg == GS)
            add(rsi, field64(m_l->segbase + 8 * in.seg));
        tlb_lookup(a.size, p.mem_write, need_slow());
        if (flags_in)
            load_flags(); // the look-up changed the host flags
        const Xbyak::Address d = mem(a.size);
        if (p.lock)
            lock();
        if (b.kind == OpKind::Imm)
            bit_op(m, d, static_cast<uint8_t>(imm_of(in, b) & (bits - 1)));
        else
            bit_op(m, d, sized(r10, a.size));
        break;
    }
    case Kind::PushMem:
        mov(rcx, qword[rdx]); // read before RSP moves (PUSH [RSP] pushes the old top)
        push_rcx(need_slow());
        break;
    case Kind::Pushf:
        // The image PUSHF stores: system flags from Cpu::rflags, arithmetic flags from the host
        // image in Cpu::lf (materialized above), RF and VM clear.
        mov(rcx, field64(m_l->rflags));
        mov(rax, ~(kArithFlags | kRF | kVM));
        and_(rcx, rax);
        mov(rax, field64(m_l->lf_res));
        and_(eax, static_cast<uint32_t>(kArithFlags));
        or_(rcx, rax);
        push_rcx(need_slow());
        break;
    case Kind::Leave:
        gload(rsi, RBP);
        tlb_lookup(8, false, need_slow());
        mov(rcx, qword[rdx]);
        add(rsi, 8);
        gstore(RSP, rsi);
        gstore(RBP, rcx);
        break;
    case Kind::MovFromSeg: {
        Xbyak::Reg d = load_reg(a, rax);
        if (a.size == 2)
            mov(d, word[rbx + m_l->seg_selector[b.reg]]);
        else
            movzx(eax, word[rbx + m_l->seg_selector[b.reg]]); // zero-extended to 64 bits
        store_reg(a, rax);
        break;
    }
    case Kind::Fence:
        if (m == ZYDIS_MNEMONIC_MFENCE)
            mfence();
        else if (m == ZYDIS_MNEMONIC_LFENCE)
            lfence();
        else
            sfence();
        break;
    case Kind::Cli:
        cmp(byte[rbx + m_l->cpl], 0);
        jne(need_slow(), T_NEAR);
        and_(qword[rbx + m_l->rflags], static_cast<int32_t>(~static_cast<uint32_t>(kIF)));
        break;
    case Kind::Swapgs:
        cmp(byte[rbx + m_l->cpl], 0);
        jne(need_slow(), T_NEAR);
        mov(rax, field64(m_l->gs_base));
        mov(rcx, field64(m_l->kernel_gs_base));
        mov(field64(m_l->gs_base), rcx);
        mov(field64(m_l->segbase + 8 * GS), rcx);
        mov(field64(m_l->kernel_gs_base), rax);
        break;
    case Kind::Cmpxchg16b:
        // RDX:RAX against the memory, RCX:RBX stored if equal, else the memory into RDX:RAX
        // (rewriting them with their own values on success is the same). RBX is the Cpu pointer
        // here: kept on the host stack around the instruction.
        mov(rdi, rdx);
        gload(rax, RAX);
        gload(rdx, RDX);
        gload(rcx, RCX);
        gload(r10, RBX);
        push(rbx);
        mov(rbx, r10);
        lock();
        cmpxchg16b(ptr[rdi]);
        pop(rbx);
        gstore(RAX, rax);
        gstore(RDX, rdx);
        break;
    case Kind::DoubleShift: {
        auto count = static_cast<uint8_t>(imm_of(in, in.op[2]) & (a.size == 8 ? 63 : 31));
        Xbyak::Reg src = load_reg(b, rcx);
        std::optional<Xbyak::Reg> dreg;
        if (is_reg(a))
            dreg = load_reg(a, rax);
        const Xbyak::Address maddr = mem(a.size);
        const Xbyak::Operand& d
            = dreg ? static_cast<const Xbyak::Operand&>(*dreg) : static_cast<const Xbyak::Operand&>(maddr);
        if (m == ZYDIS_MNEMONIC_SHLD)
            shld(d, src, count);
        else
            shrd(d, src, count);
        if (dreg)
            store_reg(a, rax);
        break;
    }
    case Kind::Sti: {
        Xbyak::Label done;
        if (m_flags_r9) {
            store_r9_flags(); // the call below may clobber r9
            m_flags_r9 = false;
            m_lf_host = true;
        }
        cmp(byte[rbx + m_l->cpl], 0);
        jne(need_slow(), T_NEAR);
        test(dword[rbx + m_l->rflags], static_cast<uint32_t>(kIF));
        jnz(done, T_NEAR); // IF already set: no shadow, nothing new deliverable
        mov(rdi, rbx);
        call_abs(reinterpret_cast<const void*>(&jit_sti));
        L(done);
        break;
    }
    case Kind::FlagDf:
        if (m == ZYDIS_MNEMONIC_CLD)
            and_(qword[rbx + m_l->rflags], static_cast<int32_t>(~static_cast<uint32_t>(kDF)));
        else
            or_(qword[rbx + m_l->rflags], static_cast<int32_t>(kDF));
        break;
    case Kind::Generic: throw Xbyak::Error(Xbyak::ERR_BAD_COMBINATION);
    }

    // AND/OR/XOR/TEST: AF (undefined) as the host leaves it.
    if (p.capture && p.writes != Writes::None) {
        capture_flags();
        m_flags_r9 = false;
    } else if (p.capture_r9 && p.writes != Writes::None) {
        lahf();
        seto(al);
        mov(r9d, eax);
        m_flags_r9 = true;
    }
    if (slow) {
        slow->ends_block = ends;
        slow->materialize = m_lf_host;
        slow->r9_after = m_flags_r9;
        if (!ends)
            L(slow->resume);
    }
    return ends;
}

EmittedCode JitEmitter::block(const CpuLayout& layout, const Block& b, bool user, std::vector<LinkSlot>& slots)
{
    m_slots = &slots;
    // Labels first: they unregister from the label manager reset() clears.
    m_slow.clear();
    m_exits.clear();
    reset();
    m_slow.reserve(b.count);
    m_exits.reserve(b.count + 1);
    m_links.clear();
    m_links.reserve(kMaxLinks);
    m_out = Xbyak::Label();
    m_lookup = Xbyak::Label();
    m_out_rax = Xbyak::Label();
    m_lookup_rax = Xbyak::Label();
    m_block = &b;
    m_l = &layout;
    m_user = user;
    m_lf_host = false;
    m_flags_r9 = false;

    // Plans and flag liveness (backwards: are the flags an instruction produces ever seen?).
    // An inline STI ends the translation after the instruction that follows it (the rest of the
    // block is another translation); one with nothing after it goes to its handler.
    m_count = b.count;
    std::vector<Plan> plans(b.count);
    for (unsigned i = 0; i < m_count; ++i) {
        plans[i] = classify(b.insns[i]);
        if (plans[i].kind == Kind::Sti) {
            if (i + 1 < m_count)
                m_count = i + 2;
            else
                plans[i] = Plan {};
        }
    }
    // Two kinds of liveness: `live` (an instruction, handler or later block may read them) and
    // `fault` (only an exception frame could: an instruction that may fault comes first).
    bool live = true, fault = true;
    for (unsigned i = m_count; i-- > 0;) {
        Plan& p = plans[i];
        p.capture = live;
        p.capture_r9 = !live && fault;
        if (p.kind == Kind::Generic || p.reads || (p.writes == Writes::Partial && (p.capture || p.capture_r9))) {
            live = fault = true;
            continue;
        }
        if (p.writes == Writes::All)
            live = fault = false;
        if (p.can_fault)
            fault = true;
    }

    choose_cached(b, plans);
    mov(r12, rax); // entered with rax = c.rip or the RIP a chained exit is going to
    reload();
    m_dirty = 0;
    uint32_t off = 0;
    bool ended = false;
    for (unsigned i = 0; i < m_count; ++i) {
        const Insn& in = b.insns[i];
        const Plan& p = plans[i];
        bool last = i + 1 == m_count;
        if (p.kind == Kind::Generic) {
            write_back(m_dirty);
            m_dirty = 0;
            call_handler(in, off);
            m_lf_host = false;
            m_flags_r9 = false;
            if (!last) {
                cmp(byte[rbx + m_l->stop_block], 0);
                jne(exit_label(i + 1), T_NEAR);
                reload();
            } else {
                dynamic_exit(i + 1);
                ended = true;
            }
        } else {
            ended = inline_insn(in, p, i, off);
        }
        off += in.length;
    }
    if (!ended) {
        lea(rax, ptr[r12 + off]);
        static_exit(m_count, off);
    }

    // Slow paths: the interpreter runs the instruction (Cpu::gpr is what it sees and changes).
    for (Slow& s : m_slow) {
        const Insn& in = b.insns[s.index];
        L(s.entry);
        if (s.flags_r9)
            store_r9_flags();
        write_back(s.dirty);
        m_dirty = 0;
        call_handler(in, s.offset, true);
        if (s.ends_block) {
            dynamic_exit(s.index + 1);
            continue;
        }
        if (s.materialize || s.r9_after) {
            mov(rdi, rbx);
            call_abs(reinterpret_cast<const void*>(&jit_flags_to_host));
        }
        if (s.r9_after) {
            // r9 := the flags in LAHF/SETO form (the handler's call may have clobbered r9).
            mov(rax, qword[rbx + m_l->lf_res]);
            mov(ecx, eax);
            and_(eax, 0xd5);
            shl(eax, 8);
            shr(ecx, 11);
            and_(ecx, 1);
            or_(eax, ecx);
            mov(r9d, eax);
        }
        if (s.index + 1 < m_count) {
            cmp(byte[rbx + m_l->stop_block], 0);
            jne(exit_label(s.index + 1), T_NEAR);
            reload();
            jmp(s.resume, T_NEAR);
        } else {
            dynamic_exit(s.index + 1);
        }
    }
    for (auto& [label, count] : m_exits) {
        L(label); // after a handler: Cpu::gpr is current
        sub(qword[rbx + m_l->jit_left], count);
        jmp(m_out, T_NEAR);
    }
    // The next block from the jump cache, as find_linear() would find it; jit_link otherwise.
    L(m_lookup_rax);
    mov(field64(m_l->rip), rax);
    L(m_lookup);
    {
        Xbyak::Label miss;
        static_assert(std::is_standard_layout_v<JumpEntry> && sizeof(JumpEntry) == 48);
        static_assert(sizeof(Tlb::page_gen[0]) == 4);
        static_assert(sizeof(Cpu::halted) == 1 && sizeof(Cpu::interrupt_shadow) == 1);
        cmp(byte[rbx + m_l->halted], 0);
        jne(miss, T_NEAR);
        cmp(byte[rbx + m_l->interrupt_shadow], 0);
        jne(miss, T_NEAR);
        mov(rax, field64(m_l->rip));
        // BlockCache::jump_index, then the first or the second entry of the pair.
        mov(rdx, kJumpHash);
        imul(rdx, rax);
        shr(rdx, 64 - kJumpIndexBits);
        and_(edx, ~1u);
        imul(edx, edx, static_cast<int>(sizeof(JumpEntry)));
        mov(rcx, reinterpret_cast<uint64_t>(m_l->jump_table));
        add(rdx, rcx);
        Xbyak::Label found;
        cmp(rax, qword[rdx + offsetof(JumpEntry, linear)]);
        je(found);
        add(rdx, static_cast<int>(sizeof(JumpEntry)));
        cmp(rax, qword[rdx + offsetof(JumpEntry, linear)]);
        jne(miss, T_NEAR);
        L(found);
        mov(rcx, field64(m_l->tlb_gen));
        cmp(byte[rdx + offsetof(JumpEntry, global)], 0);
        cmovne(rcx, field64(m_l->tlb_gen_global));
        cmp(rcx, qword[rdx + offsetof(JumpEntry, tlb_gen)]);
        jne(miss, T_NEAR);
        mov(rsi, rax);
        shr(rsi, 12);
        and_(esi, static_cast<uint32_t>(Tlb::kPageGens - 1));
        mov(ecx, dword[rbx + rsi * 4 + m_l->tlb_page_gen]);
        cmp(ecx, dword[rdx + offsetof(JumpEntry, page_gen)]);
        jne(miss, T_NEAR);
        mov(rcx, reinterpret_cast<uint64_t>(m_l->code_write_epoch));
        mov(rcx, qword[rcx]);
        cmp(rcx, qword[rdx + offsetof(JumpEntry, epoch)]);
        jne(miss, T_NEAR);
        // Same mode (64-bit) and privilege as this block.
        static_assert(offsetof(JumpEntry, user) == offsetof(JumpEntry, mode) + 1);
        cmp(word[rdx + offsetof(JumpEntry, mode)],
            static_cast<uint32_t>(static_cast<uint8_t>(CpuMode::Long64) | (m_user ? 0x100 : 0)));
        jne(miss, T_NEAR);
        mov(rcx, qword[rdx + offsetof(JumpEntry, code)]);
        test(rcx, rcx);
        jz(miss, T_NEAR);
        jmp(rcx);
        L(miss);
    }
    mov(rdi, rbx);
    mov(rsi, qword[rbx + m_l->jit_cache]);
    xor_(edx, edx);
    call_abs(reinterpret_cast<const void*>(&jit_link));
    test(rax, rax);
    jz(m_out, T_NEAR);
    mov(rcx, rax);
    mov(rax, field64(m_l->rip));
    jmp(rcx);
    for (Link& link : m_links) {
        L(link.stub);
        mov(field64(m_l->rip), rax);
        mov(rdi, rbx);
        mov(rsi, qword[rbx + m_l->jit_cache]);
        lea(rdx, ptr[rip + link.slot]);
        call_abs(reinterpret_cast<const void*>(&jit_link));
        test(rax, rax);
        jz(m_out, T_NEAR);
        mov(rcx, rax);
        mov(rax, field64(m_l->rip));
        jmp(rcx);
    }
    L(m_out_rax);
    mov(field64(m_l->rip), rax);
    L(m_out);
    mov(rax, reinterpret_cast<uint64_t>(m_l->exit_stub));
    jmp(rax);
    align(8);
    for (Link& link : m_links) {
        L(link.slot);
        // Until patched, the slot holds the offset of its link stub; Jit::translate makes it absolute.
        m_slots->push_back(LinkSlot { getSize(), static_cast<size_t>(link.stub.getAddress() - getCode()) });
        dq(0);
    }
    return EmittedCode { getCode(), getSize() };
}

void JitEmitterDeleter::operator()(JitEmitter* e) const
{
    delete e;
}

JitEmitterPtr make_jit_emitter()
{
    return JitEmitterPtr(new JitEmitter());
}

EmittedCode emit_stubs(JitEmitter& e, const CpuLayout& layout, size_t& exit_offset)
{
    EmittedCode code = e.stubs(layout);
    exit_offset = e.exit_offset();
    return code;
}

EmittedCode emit_block(
    JitEmitter& e, const CpuLayout& layout, const Block& block, bool user, std::vector<LinkSlot>& slots)
{
    return e.block(layout, block, user, slots);
}

} // namespace vessel::soft
