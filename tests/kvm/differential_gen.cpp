#include "differential_gen.h"

#include <Zydis/Zydis.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "differential_gen_impl.h"

namespace vessel::difftest {

namespace {

uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// Floating-point edge cases: zeros, infinities, quiet and signalling NaNs with payloads,
// denormals, the normal range's ends, halfway values for rounding and conversion limits.
constexpr uint32_t kF32[] = {
    0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7fc12345, 0x7f800001,
    0xffa00001, 0x00000001, 0x807fffff, 0x00400000, 0x00800000, 0x80800000, 0x7f7fffff, 0xff7fffff,
    0x3f800000, 0xbf800000, 0x3f000000, 0xbf000000, 0x3fc00000, 0x40200000, 0xc0200000, 0x40600000,
    0x4f000000, 0xcf000000, 0x4effffff, 0xcf000001, 0x5f000000, 0xdf000000, 0x5effffff, 0x4b000000,
    0x4b7fffff, 0x3eaaaaab, 0x1f800000, 0x60000000,
};
constexpr uint64_t kF64[] = {
    0x0000000000000000, 0x8000000000000000, 0x7ff0000000000000, 0xfff0000000000000, 0x7ff8000000000000,
    0xfff8000000000000, 0x7ff8000000012345, 0x7ff0000000000001, 0xfff4000000000000, 0x0000000000000001,
    0x800fffffffffffff, 0x0010000000000000, 0x7fefffffffffffff, 0xffefffffffffffff, 0x3ff0000000000000,
    0xbff0000000000000, 0x3fe0000000000000, 0xbfe0000000000000, 0x3ff8000000000000, 0x4004000000000000,
    0xc004000000000000, 0x41e0000000000000, 0xc1e0000000000000, 0x41dfffffffe00000, 0xc1e0000000200000,
    0x41dfffffffc00000, 0x43e0000000000000, 0xc3e0000000000000, 0x43dfffffffffffff, 0x47efffffe0000000,
    0x47efffffffffffff, 0x47f0000000000000, 0x36a0000000000000, 0x3690000000000000, 0x3810000000000000,
    0x380fffffffffffff, 0x4330000000000000, 0x7fe0000000000000,
};

uint32_t special_f32(Gen& g)
{
    switch (g.below(4)) {
    case 0:
    case 1: return kF32[g.below(std::size(kF32))];
    case 2: { // a normal value of moderate magnitude
        uint32_t exp = static_cast<uint32_t>(g.range(127 - 24, 127 + 24));
        return static_cast<uint32_t>((g.rnd() & 0x807fffff) | (exp << 23));
    }
    default: return static_cast<uint32_t>(g.rnd());
    }
}

uint64_t special_f64(Gen& g)
{
    switch (g.below(4)) {
    case 0:
    case 1: return kF64[g.below(std::size(kF64))];
    case 2: {
        uint64_t exp = static_cast<uint64_t>(g.range(1023 - 60, 1023 + 60));
        return (g.rnd() & 0x800fffffffffffffULL) | (exp << 52);
    }
    default: return g.rnd();
    }
}

} // namespace

Gen::Gen(Case& c, uint64_t seed)
    : Xbyak::CodeGenerator(2 * kCodeSlotSize, Xbyak::DontSetProtectRWE)
    , m_case(c)
    , m_rng(seed)
{
}

uint64_t Gen::interesting(unsigned width)
{
    unsigned bits = width * 8;
    uint64_t m = width >= 8 ? ~0ULL : (1ULL << bits) - 1;
    switch (below(12)) {
    case 0: return 0;
    case 1: return m;
    case 2: return 1;
    case 3: return 1ULL << (bits - 1);
    case 4: return (1ULL << (bits - 1)) - 1;
    case 5: return below(256) & m;
    case 6: return (1ULL << below(bits)) & m;
    case 7: return ((1ULL << below(bits)) - 1) & m;
    case 8: return (m - below(256)) & m;
    case 9: return ((1ULL << (bits - 1)) + below(8) - 4) & m;
    default: return rnd() & m;
    }
}

void Gen::fill_vector(uint8_t* out)
{
    switch (below(6)) {
    case 0:
        for (int i = 0; i < 16; ++i)
            out[i] = static_cast<uint8_t>(rnd());
        break;
    case 1:
        for (int i = 0; i < 4; ++i) {
            uint32_t v = special_f32(*this);
            std::memcpy(out + 4 * i, &v, 4);
        }
        break;
    case 2:
        for (int i = 0; i < 2; ++i) {
            uint64_t v = special_f64(*this);
            std::memcpy(out + 8 * i, &v, 8);
        }
        break;
    case 3:
        for (int i = 0; i < 8; ++i) {
            uint16_t v = static_cast<uint16_t>(interesting(2));
            std::memcpy(out + 2 * i, &v, 2);
        }
        break;
    case 4:
        for (int i = 0; i < 4; ++i) {
            uint32_t v = static_cast<uint32_t>(interesting(4));
            std::memcpy(out + 4 * i, &v, 4);
        }
        break;
    default:
        for (int i = 0; i < 2; ++i) {
            uint64_t v = interesting(8);
            std::memcpy(out + 8 * i, &v, 8);
        }
        break;
    }
}

uint32_t Gen::random_mxcsr()
{
    // All exceptions masked (an unmasked one would fault), any rounding mode, FTZ/DAZ now and
    // then, any sticky flags.
    uint32_t v = 0x1f80 | static_cast<uint32_t>(below(4) << 13) | static_cast<uint32_t>(rnd() & 0x3f);
    if (chance(25))
        v |= 0x8000;
    if (chance(25))
        v |= 0x40;
    return v;
}

GReg Gen::pick_reg(unsigned width, bool dest, bool no_rex, uint32_t exclude)
{
    for (int tries = 0; tries < 1000; ++tries) {
        GReg r;
        r.width = width;
        if (no_rex) {
            int i = static_cast<int>(below(8));
            if (width == 1 && i >= 4) {
                r.idx = i - 4;
                r.high = true;
            } else {
                r.idx = i;
            }
        } else {
            r.idx = static_cast<int>(below(16));
        }
        if (exclude & (1u << r.idx))
            continue;
        // RSP is never a destination (SPL/SP/ESP included); AH is fine (it is RAX).
        if (dest && r.idx == RSP && !r.high)
            continue;
        if (no_rex && width != 1 && r.idx >= 8)
            continue;
        return r;
    }
    throw std::runtime_error("pick_reg: no register left");
}

Xbyak::Reg Gen::reg(int idx, unsigned width)
{
    switch (width) {
    case 1: return Xbyak::Reg8(idx, idx >= 4 && idx < 8);
    case 2: return Xbyak::Reg16(idx);
    case 4: return Xbyak::Reg32(idx);
    default: return Xbyak::Reg64(idx);
    }
}

Xbyak::Reg Gen::reg(const GReg& r) const
{
    if (r.high)
        return Xbyak::Reg8(r.idx + 4, false); // AH CH DH BH
    return reg(r.idx, r.width);
}

void Gen::set_reg(int idx, unsigned width, uint64_t value)
{
    uint64_t m = width >= 8 ? ~0ULL : (1ULL << (width * 8)) - 1;
    mov(reg(idx, width), value & m);
}

uint64_t Gen::pick_addr(const MemSpec& s)
{
    uint64_t lo = (s.lo + s.align - 1) & ~static_cast<uint64_t>(s.align - 1);
    uint64_t hi = s.hi - s.size; // last start
    if (chance(15)) {
        // Straddle (or touch) a page boundary inside the range.
        uint64_t boundary = (lo + 0x1000) & ~0xfffULL;
        if (boundary <= hi) {
            uint64_t a = (boundary - below(s.size + 1)) & ~static_cast<uint64_t>(s.align - 1);
            if (a >= lo && a <= hi)
                return a;
        }
    }
    return lo + below((hi - lo) / s.align + 1) * s.align;
}

Xbyak::Address Gen::abs(unsigned bits, uint64_t addr)
{
    const Xbyak::AddressFrame* frames[] = { &ptr, &byte, &word, &dword, &qword, &xword };
    unsigned i = bits == 0 ? 0 : bits == 8 ? 1 : bits == 16 ? 2 : bits == 32 ? 3 : bits == 64 ? 4 : 5;
    return (*frames[i])[Xbyak::RegExp(static_cast<size_t>(addr))]; // [disp32], not the moffs form
}

Xbyak::Address Gen::mem(unsigned bits, const MemSpec& s, uint64_t* out)
{
    const Xbyak::AddressFrame* frames[] = { &ptr, &byte, &word, &dword, &qword, &xword };
    const Xbyak::AddressFrame& f = *frames[bits == 0 ? 0 : bits == 8 ? 1 : bits == 16 ? 2 : bits == 32 ? 3 : bits == 64 ? 4 : 5];
    uint64_t a = pick_addr(s);
    if (out)
        *out = a;
    // Now and then through FS or GS (bases set per case, some wrap around 2^64): the effective
    // address is then `a - base`. begin_main() emits the prefix on the instruction under test.
    uint64_t base = 0;
    if (chance(15)) {
        bool gs = chance(50);
        m_seg_prefix = gs ? 0x65 : 0x64;
        base = gs ? m_case.gs_base : m_case.fs_base;
    }
    uint64_t ea = a - base;
    auto fits32 = [](int64_t v) { return v >= INT32_MIN && v <= INT32_MAX; };
    auto absolute = [&]() {
        if (!fits32(static_cast<int64_t>(ea))) { // [disp32] cannot reach it through this base
            m_seg_prefix = 0;
            ea = a;
        }
        return f[Xbyak::RegExp(static_cast<size_t>(ea))];
    };
    // Too few free registers (a step pinned most of them): use an absolute address.
    unsigned free_count = 0;
    for (int i = 0; i < (s.no_rex ? 8 : 16); ++i)
        free_count += i != RSP && !(m_pinned & (1u << i));
    if (free_count < 3)
        return absolute();
    auto free_reg = [&](uint32_t exclude) {
        for (;;) {
            int i = static_cast<int>(below(s.no_rex ? 8 : 16));
            if (i == RSP || (m_pinned & (1u << i)) || (exclude & (1u << i)))
                continue;
            pin(i);
            return i;
        }
    };
    auto disp_any = [&]() -> int64_t { return chance(50) ? range(-128, 127) : range(-0x1000000, 0x1000000); };
    int form = static_cast<int>(below(9));
    if (base != 0 && (form == 6 || form == 7))
        form = 2; // RIP-relative and 32-bit forms cannot reach `a` through an arbitrary base
    switch (form) {
    case 0: {
        int b = free_reg(0);
        set_reg(b, 8, ea);
        return f[Xbyak::Reg64(b)];
    }
    case 1: {
        int b = free_reg(0);
        int64_t disp = disp_any();
        set_reg(b, 8, ea - static_cast<uint64_t>(disp));
        return f[Xbyak::Reg64(b) + disp];
    }
    case 2:
    case 3: {
        int b = free_reg(0);
        int i = free_reg(1u << b);
        int scale = 1 << below(4);
        int64_t iv = range(-64, 64);
        int64_t disp = chance(30) ? 0 : disp_any();
        set_reg(b, 8, ea - static_cast<uint64_t>(iv * scale) - static_cast<uint64_t>(disp));
        set_reg(i, 8, static_cast<uint64_t>(iv));
        return f[Xbyak::Reg64(b) + Xbyak::Reg64(i) * scale + disp];
    }
    case 4: {
        int scale = 1 << below(4);
        int64_t iv = range(-64, 64);
        int64_t disp = static_cast<int64_t>(ea) - iv * scale;
        if (!fits32(disp))
            return absolute();
        int i = free_reg(0);
        set_reg(i, 8, static_cast<uint64_t>(iv));
        return f[Xbyak::Reg64(i) * scale + disp];
    }
    case 5: return absolute();
    case 6: {
        // RIP-relative: Xbyak computes the displacement from the host address of the code, so
        // hand it the host address that corresponds to guest address `a`.
        // SAFETY: never dereferenced; Xbyak only subtracts its own code pointer from it.
        auto host = reinterpret_cast<const uint8_t*>(getCode()) + (a - m_case.code_addr);
        return f[rip + static_cast<const void*>(host)];
    }
    case 7: {
        // 32-bit address size (67 prefix): the sum wraps at 4 GiB.
        int b = free_reg(0);
        int i = free_reg(1u << b);
        int scale = 1 << below(4);
        int64_t iv = range(-64, 64);
        int64_t disp = chance(30) ? 0 : disp_any();
        uint32_t b32 = static_cast<uint32_t>(a - static_cast<uint64_t>(iv * scale) - static_cast<uint64_t>(disp));
        set_reg(b, 4, b32);
        set_reg(i, 4, static_cast<uint64_t>(iv));
        return f[Xbyak::Reg32(b) + Xbyak::Reg32(i) * scale + disp];
    }
    default: {
        // RSP-based (RSP is known): for POP, the address uses RSP after the increment.
        uint64_t rsp = rsp_now() + static_cast<uint64_t>(s.rsp_bias);
        int64_t disp = static_cast<int64_t>(ea - rsp);
        if (!fits32(disp) || !fits32(disp - 64 * 8))
            return absolute();
        if (chance(50))
            return f[Xbyak::Reg64(RSP) + disp];
        int i = free_reg(0);
        int scale = 1 << below(4);
        int64_t iv = range(-64, 64);
        set_reg(i, 8, static_cast<uint64_t>(iv));
        return f[Xbyak::Reg64(RSP) + Xbyak::Reg64(i) * scale + (disp - iv * scale)];
    }
    }
}

uint64_t Gen::constant(const void* value, size_t size, size_t align)
{
    m_const_used = (m_const_used + align - 1) & ~(align - 1);
    if (m_const_used + size > kConstSize)
        throw std::logic_error("generator: constant pool full"); // the whole pool is in the initial image
    uint64_t addr = kConstBase + m_const_used;
    std::memcpy(m_case.window.data() + (addr - kWindowBase), value, size);
    m_const_used += size;
    return addr;
}

uint64_t Gen::cc_reads(unsigned cc)
{
    switch (cc >> 1) {
    case 0: return kOF;
    case 1: return kCF;
    case 2: return kZF;
    case 3: return kCF | kZF;
    case 4: return kSF;
    case 5: return kPF;
    case 6: return kSF | kOF;
    default: return kZF | kSF | kOF;
    }
}

void Gen::emit_cmov(unsigned cc, const Xbyak::Reg& r, const Xbyak::Operand& op)
{
    switch (cc) {
    case 0: cmovo(r, op); break;
    case 1: cmovno(r, op); break;
    case 2: cmovb(r, op); break;
    case 3: cmovnb(r, op); break;
    case 4: cmovz(r, op); break;
    case 5: cmovnz(r, op); break;
    case 6: cmovbe(r, op); break;
    case 7: cmovnbe(r, op); break;
    case 8: cmovs(r, op); break;
    case 9: cmovns(r, op); break;
    case 10: cmovp(r, op); break;
    case 11: cmovnp(r, op); break;
    case 12: cmovl(r, op); break;
    case 13: cmovnl(r, op); break;
    case 14: cmovle(r, op); break;
    default: cmovnle(r, op); break;
    }
}

void Gen::emit_setcc(unsigned cc, const Xbyak::Operand& op)
{
    switch (cc) {
    case 0: seto(op); break;
    case 1: setno(op); break;
    case 2: setb(op); break;
    case 3: setnb(op); break;
    case 4: setz(op); break;
    case 5: setnz(op); break;
    case 6: setbe(op); break;
    case 7: setnbe(op); break;
    case 8: sets(op); break;
    case 9: setns(op); break;
    case 10: setp(op); break;
    case 11: setnp(op); break;
    case 12: setl(op); break;
    case 13: setnl(op); break;
    case 14: setle(op); break;
    default: setnle(op); break;
    }
}

void Gen::begin_main(uint64_t reads)
{
    if (reads & m_undef) {
        // Define all six arithmetic flags first: the instruction reads one that is undefined.
        unsigned w = width_any();
        GReg a = pick_reg(w, false, false), b = pick_reg(w, false, false);
        cmp(reg(a), reg(b));
        m_undef = 0;
    }
    m_in_main = true;
    m_main_offset = static_cast<uint32_t>(getSize());
    if (m_seg_prefix) {
        db(m_seg_prefix);
        m_seg_prefix = 0;
    }
}

void Gen::effects(uint64_t written, uint64_t undefined)
{
    if (!m_in_main)
        throw std::logic_error("effects() without begin_main()");
    m_undef = (m_undef & ~written) | undefined;
    Step& s = m_case.steps.back();
    s.main = m_main_offset;
    s.end = static_cast<uint32_t>(getSize());

    // Check the instruction under test decodes as one instruction spanning [main, end), and
    // that a RIP-relative operand reaches the window (Xbyak computes it from host addresses).
    ZydisDecoder dec;
    ZydisDecoderInit(&dec, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
    ZydisDecodedInstruction insn;
    ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
    const uint8_t* bytes = getCode() + s.main;
    if (ZYAN_FAILED(ZydisDecoderDecodeFull(&dec, bytes, s.end - s.main, &insn, ops)) || insn.length != s.end - s.main) {
        if (s.what == "fault")
            return; // e.g. LOCK on a register destination: invalid on purpose
        std::string hex;
        for (uint32_t i = s.main; i < s.end; ++i)
            hex += fmt::format("{:02x}", getCode()[i]);
        throw std::logic_error("generator: the " + s.what + " instruction " + hex + " does not decode as one instruction");
    }
    for (unsigned i = 0; i < insn.operand_count; ++i) {
        if (ops[i].type != ZYDIS_OPERAND_TYPE_MEMORY || ops[i].mem.base != ZYDIS_REGISTER_RIP
            || insn.mnemonic == ZYDIS_MNEMONIC_LEA || s.what == "smc")
            continue;
        ZyanU64 target = 0;
        ZydisCalcAbsoluteAddress(&insn, &ops[i], m_case.code_addr + s.main, &target);
        if (target < kWindowBase || target >= kWindowBase + kWindowSize) {
            char text[256];
            ZydisFormatter fmt;
            ZydisFormatterInit(&fmt, ZYDIS_FORMATTER_STYLE_INTEL);
            ZydisFormatterFormatInstruction(&fmt, &insn, ops, insn.operand_count_visible, text, sizeof(text),
                                            m_case.code_addr + s.main, nullptr);
            throw std::logic_error(std::string("generator: a RIP-relative operand misses the window: ") + text);
        }
    }
}

void Gen::trace_stub(uint32_t slot)
{
    pushfq();
    pop(abs(64, kTraceBase + 8 * slot));
    mov(qword[rsp - 8], 0); // the pushed RFLAGS (with host-owned bits) must not stay on the stack
}

void Gen::build(const GenOptions& options)
{
    Case& c = m_case;
    m_options = &options;
    // Code anywhere in the first page of the slot (often near its end, so that instructions
    // straddle the page boundary); the stack anywhere in its two pages.
    c.code_addr += chance(40) ? 0x1000 - below(48) : below(0x1000);
    m_rsp_init = kStackLow + 0x400 + below(0x1800);
    m_rsp_init -= chance(90) ? (m_rsp_init & 7) : 0;
    const uint64_t bases[] = { 0, 0x1000, 0x7fffffff0000, 0xffffffffffe00000, 0x100000000, 0xfffffffffffff000 };
    c.fs_base = bases[below(std::size(bases))];
    c.gs_base = bases[below(std::size(bases))];
    c.window.assign(kWindowSize, 0);
    for (uint64_t off = 0; off < kDataSize; off += 16)
        fill_vector(c.window.data() + (kDataBase - kWindowBase) + off);
    for (uint64_t a = kStackLow; a < kStackHigh; a += 8) {
        uint64_t v = interesting(8);
        std::memcpy(c.window.data() + (a - kWindowBase), &v, 8);
    }
    for (int i = 0; i < 16; ++i) {
        unsigned w = width_any();
        uint64_t m = w >= 8 ? ~0ULL : (1ULL << (w * 8)) - 1;
        c.gpr[i] = interesting(w) | (chance(50) ? (rnd() & ~m) : 0);
    }
    c.gpr[RSP] = m_rsp_init;
    m_df = chance(30);
    c.rflags = 0x2 | (rnd() & kArith) | (m_df ? kDF : 0);
    c.mxcsr = random_mxcsr();
    for (int i = 0; i < 16; ++i)
        fill_vector(c.xmm.data() + 16 * i);

    std::vector<const ClassEntry*> pool;
    unsigned total = 0;
    {
        std::vector<std::string> wanted;
        std::stringstream ss(options.classes);
        for (std::string item; std::getline(ss, item, ',');)
            if (!item.empty())
                wanted.push_back(item);
        for (const ClassEntry& e : classes()) {
            if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), e.name) == wanted.end())
                continue;
            pool.push_back(&e);
            total += e.weight; // "fault" has weight 0: it only ends cases
        }
        if (total == 0) { // only "fault" asked for: plain ALU steps before it
            pool.push_back(&classes().front());
            total = classes().front().weight;
        }
        for (const std::string& w : wanted) {
            bool known = std::any_of(classes().begin(), classes().end(), [&](const ClassEntry& e) { return w == e.name; });
            if (!known)
                throw std::invalid_argument("unknown generator class '" + w + "'");
        }
    }

    uint32_t steps = static_cast<uint32_t>(range(options.min_steps, options.max_steps));
    for (uint32_t k = 0; k < steps && k < kTraceSlots; ++k) {
        if (c.code_addr + getSize() + 320 > (c.code_addr & ~(kCodeSlotSize - 1)) + kCodeSlotSize)
            break;
        uint64_t pick = below(total);
        const ClassEntry* e = pool.front();
        for (const ClassEntry* p : pool) {
            if (pick < p->weight) {
                e = p;
                break;
            }
            pick -= p->weight;
        }
        m_pinned = 0;
        m_in_main = false;
        m_seg_prefix = 0;
        c.steps.push_back(Step { static_cast<uint32_t>(getSize()), 0, 0, 0, e->name });
        (this->*(e->fn))();
        if (!m_in_main)
            throw std::logic_error(std::string("generator class ") + e->name + " emitted no instruction");
        c.steps.back().tail = static_cast<uint32_t>(getSize());
        trace_stub(k);
        c.trace_mask.push_back(kComparedFlags & ~m_undef);
    }
    // Now and then the case ends with an instruction that faults on purpose.
    bool faults = std::any_of(pool.begin(), pool.end(), [](const ClassEntry* e) { return e->fn == &Gen::g_fault; });
    if (faults && chance(options.fault_percent)) {
        m_pinned = 0;
        m_in_main = false;
        m_seg_prefix = 0;
        c.steps.push_back(Step { static_cast<uint32_t>(getSize()), 0, 0, 0, "fault" });
        g_fault();
        c.steps.back().tail = static_cast<uint32_t>(getSize());
        c.expect_fault = true;
        c.trace_mask.push_back(kComparedFlags & ~m_undef);
    }
    c.flags_mask = kComparedFlags & ~m_undef;
    out_(static_cast<uint8_t>(kDonePort), al);
    c.end_rip = here();
    db(0xeb);
    db(0xfe); // jmp $: where the vCPU waits for the kick
    if (c.code_addr + getSize() > (c.code_addr & ~(kCodeSlotSize - 1)) + kCodeSlotSize)
        throw std::logic_error("generated code exceeds its slot");
    c.code.assign(getCode(), getCode() + getSize());
}

const std::vector<Gen::ClassEntry>& Gen::classes()
{
    static const std::vector<ClassEntry> all = {
        { "alu2", 10, &Gen::g_alu2 },
        { "alu1", 4, &Gen::g_alu1 },
        { "shift", 8, &Gen::g_shift },
        { "shxd", 4, &Gen::g_shxd },
        { "mul", 4, &Gen::g_mul },
        { "div", 4, &Gen::g_div },
        { "bt", 5, &Gen::g_bt },
        { "bitscan", 5, &Gen::g_bitscan },
        { "movx", 4, &Gen::g_movx },
        { "xchg", 5, &Gen::g_xchg },
        { "cmpxchg8b", 2, &Gen::g_cmpxchg8b },
        { "cmov_setcc", 6, &Gen::g_cmov_setcc },
        { "lea", 4, &Gen::g_lea },
        { "pushpop", 4, &Gen::g_pushpop },
        { "string", 6, &Gen::g_string },
        { "flagops", 4, &Gen::g_flagops },
        { "sse_int", 8, &Gen::g_sse_int },
        { "sse_shift", 4, &Gen::g_sse_shift },
        { "sse_shuffle", 4, &Gen::g_sse_shuffle },
        { "sse_move", 5, &Gen::g_sse_move },
        { "sse_fp", 8, &Gen::g_sse_fp },
        { "sse_cmp", 5, &Gen::g_sse_cmp },
        { "sse_cvt", 6, &Gen::g_sse_cvt },
        { "sse_logic", 3, &Gen::g_sse_logic },
        { "mxcsr", 2, &Gen::g_mxcsr },
        { "branch", 5, &Gen::g_branch },
        { "smc", 1, &Gen::g_smc },
        { "fault", 0, &Gen::g_fault },
    };
    return all;
}

std::vector<std::string> generator_classes()
{
    std::vector<std::string> out;
    for (const auto& e : Gen::classes())
        out.emplace_back(e.name);
    return out;
}

Case generate_case(uint64_t seed, uint32_t index, const GenOptions& options)
{
    Case c;
    c.seed = seed;
    c.index = index;
    c.code_addr = kCodeBase + (index % kCodeSlots) * kCodeSlotSize;
    Gen g(c, splitmix64(seed ^ splitmix64(index)));
    g.build(options);
    return c;
}

} // namespace vessel::difftest
