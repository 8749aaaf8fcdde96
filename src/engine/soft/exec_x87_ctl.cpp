// x87 control instructions: FNINIT, FNCLEX, FLDCW, FNSTCW, FNSTSW (m16 and AX), FWAIT,
// FNSTENV/FLDENV and FNSAVE/FRSTOR in the 16- and 32-bit, real- and protected-mode layouts.
// The FN* forms do not check for pending exceptions; FLDCW/FLDENV/FRSTOR/FWAIT do. FCS/FDS are
// not tracked and saved as 0 (as on CPUs that deprecate them).
#include "engine/soft/exec_x87_common.h"

namespace vessel::soft::x87 {

namespace {

// Full tag word (2 bits per physical register): 00 valid, 01 zero, 10 special, 11 empty.
uint16_t full_tag_word(Cpu& c)
{
    uint16_t tw = 0;
    for (unsigned p = 0; p < 8; ++p) {
        unsigned tag;
        if (!((ftw(c) >> p) & 1)) {
            tag = 3;
        } else {
            F80 v = st_get(c, (p - top(c)) & 7);
            unsigned exp = v.se & 0x7fff;
            if (exp == 0x7fff)
                tag = 2;
            else if (exp == 0)
                tag = v.mant ? 2 : 1;
            else
                tag = (v.mant >> 63) ? 0 : 2;
        }
        tw = static_cast<uint16_t>(tw | (tag << (2 * p)));
    }
    return tw;
}

uint8_t abridged_tag(uint16_t tw)
{
    uint8_t t = 0;
    for (unsigned p = 0; p < 8; ++p)
        if (((tw >> (2 * p)) & 3) != 3)
            t = static_cast<uint8_t>(t | (1u << p));
    return t;
}

void fninit_state(Cpu& c)
{
    set_top(c, 0);
    fx_set<uint16_t>(c, kFcw, kFcwInit);
    set_fsw(c, 0);
    ftw(c) = 0;
    fx_set<uint16_t>(c, kFop, 0);
    fx_set<uint64_t>(c, kFip, 0);
    fx_set<uint64_t>(c, kFdp, 0);
}

bool real_layout(const Cpu& c)
{
    return c.mode == CpuMode::Real;
}
bool env32(const Insn& in)
{
    return in.osize != 2;
}
unsigned env_size(const Insn& in)
{
    return env32(in) ? 28 : 14;
}

void put16(uint8_t* p, uint16_t v)
{
    std::memcpy(p, &v, 2);
}
void put32(uint8_t* p, uint32_t v)
{
    std::memcpy(p, &v, 4);
}
uint16_t get16(const uint8_t* p)
{
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}
uint32_t get32(const uint8_t* p)
{
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

// The environment image (14 or 28 bytes).
void store_env(Cpu& c, const Insn& in, uint8_t* e)
{
    uint16_t cw = fcw(c), sw = fsw(c), tw = full_tag_word(c);
    uint16_t fop = fx_get<uint16_t>(c, kFop) & 0x7ff;
    uint32_t fip = static_cast<uint32_t>(fx_get<uint64_t>(c, kFip));
    uint32_t fdp = static_cast<uint32_t>(fx_get<uint64_t>(c, kFdp));
    bool real = real_layout(c);
    if (env32(in)) {
        put32(e + 0, 0xffff0000u | cw);
        put32(e + 4, 0xffff0000u | sw);
        put32(e + 8, 0xffff0000u | tw);
        if (real) {
            put32(e + 12, 0xffff0000u | (fip & 0xffff));
            put32(e + 16, ((fip >> 16) << 12) | fop);
            put32(e + 20, 0xffff0000u | (fdp & 0xffff));
            put32(e + 24, (fdp >> 16) << 12);
        } else {
            put32(e + 12, fip);
            put32(e + 16, static_cast<uint32_t>(fop) << 16); // FCS = 0
            put32(e + 20, fdp);
            put32(e + 24, 0xffff0000u); // FDS = 0
        }
    } else {
        put16(e + 0, cw);
        put16(e + 2, sw);
        put16(e + 4, tw);
        put16(e + 6, static_cast<uint16_t>(fip));
        put16(e + 10, static_cast<uint16_t>(fdp));
        if (real) {
            put16(e + 8, static_cast<uint16_t>((((fip >> 16) & 0xf) << 12) | fop));
            put16(e + 12, static_cast<uint16_t>(((fdp >> 16) & 0xf) << 12));
        } else {
            put16(e + 8, 0);
            put16(e + 12, 0);
        }
    }
}

void load_env(Cpu& c, const Insn& in, const uint8_t* e)
{
    uint16_t cw, sw, tw, fop;
    uint32_t fip, fdp;
    bool real = real_layout(c);
    if (env32(in)) {
        cw = get16(e + 0);
        sw = get16(e + 4);
        tw = get16(e + 8);
        if (real) {
            fip = (get32(e + 12) & 0xffff) | (((get32(e + 16) >> 12) & 0xffff) << 16);
            fop = get32(e + 16) & 0x7ff;
            fdp = (get32(e + 20) & 0xffff) | (((get32(e + 24) >> 12) & 0xffff) << 16);
        } else {
            fip = get32(e + 12);
            fop = (get32(e + 16) >> 16) & 0x7ff;
            fdp = get32(e + 20);
        }
    } else {
        cw = get16(e + 0);
        sw = get16(e + 2);
        tw = get16(e + 4);
        fip = get16(e + 6);
        fdp = get16(e + 10);
        fop = real ? (get16(e + 8) & 0x7ff) : 0;
        if (real) {
            fip |= static_cast<uint32_t>((get16(e + 8) >> 12) & 0xf) << 16;
            fdp |= static_cast<uint32_t>((get16(e + 12) >> 12) & 0xf) << 16;
        }
    }
    set_top(c, (sw >> 11) & 7);
    fx_set<uint16_t>(c, kFcw, fcw_value(cw));
    set_fsw(c, sw);
    ftw(c) = abridged_tag(tw);
    fx_set<uint16_t>(c, kFop, fop);
    fx_set<uint64_t>(c, kFip, fip);
    fx_set<uint64_t>(c, kFdp, fdp);
    update_es(c);
}

void exec_fninit(Cpu& c, const Insn&)
{
    check_x87(c);
    fninit_state(c);
}

void exec_fnclex(Cpu& c, const Insn&)
{
    check_x87(c);
    set_fsw(c, static_cast<uint16_t>(fsw(c) & ~(0x3f | kStackFault | kES | kBusy)));
}

void exec_fldcw(Cpu& c, const Insn& in)
{
    begin(c);
    uint16_t v = read_linear<uint16_t>(c, mem_linear(c, in));
    fx_set<uint16_t>(c, kFcw, fcw_value(v));
    update_es(c);
}

void exec_fnstcw(Cpu& c, const Insn& in)
{
    check_x87(c);
    write_linear<uint16_t>(c, mem_linear(c, in), fcw(c));
}

// FNSTSW m16 (DD /7) or AX (DF E0).
void exec_fnstsw(Cpu& c, const Insn& in)
{
    check_x87(c);
    if (has_mem(in))
        write_linear<uint16_t>(c, mem_linear(c, in), fsw(c));
    else
        c.gpr[RAX] = (c.gpr[RAX] & ~0xffffULL) | fsw(c);
}

void exec_fwait(Cpu& c, const Insn&)
{
    if ((c.cr0 & (x86::kCr0Mp | kCr0Ts)) == (x86::kCr0Mp | kCr0Ts))
        raise_fault(kExcNM);
    check_pending_x87(c);
}

// FNSTENV stores the environment, then masks all exceptions.
void exec_fnstenv(Cpu& c, const Insn& in)
{
    check_x87(c);
    uint8_t e[28];
    store_env(c, in, e);
    uint64_t lin = mem_linear(c, in);
    if (env32(in)) {
        struct B28 {
            uint8_t b[28];
        } blob;
        std::memcpy(blob.b, e, 28);
        write_linear(c, lin, blob);
    } else {
        struct B14 {
            uint8_t b[14];
        } blob;
        std::memcpy(blob.b, e, 14);
        write_linear(c, lin, blob);
    }
    fx_set<uint16_t>(c, kFcw, static_cast<uint16_t>(fcw(c) | 0x3f));
    update_es(c);
}

void exec_fldenv(Cpu& c, const Insn& in)
{
    begin(c);
    uint8_t e[28];
    uint64_t lin = mem_linear(c, in);
    if (env32(in)) {
        struct B28 {
            uint8_t b[28];
        } blob = read_linear<B28>(c, lin);
        std::memcpy(e, blob.b, 28);
    } else {
        struct B14 {
            uint8_t b[14];
        } blob = read_linear<B14>(c, lin);
        std::memcpy(e, blob.b, 14);
    }
    load_env(c, in, e);
}

struct SaveArea {
    uint8_t b[108];
};

// FNSAVE: environment + ST(0)..ST(7), then the FNINIT state.
void exec_fnsave(Cpu& c, const Insn& in)
{
    check_x87(c);
    SaveArea a {};
    unsigned n = env_size(in);
    store_env(c, in, a.b);
    for (unsigned i = 0; i < 8; ++i) {
        M80 m = to_m80(st_get(c, i));
        std::memcpy(a.b + n + 10 * i, m.b, 10);
    }
    uint64_t lin = mem_linear(c, in);
    if (n == 28) {
        write_linear(c, lin, a);
    } else {
        struct B94 {
            uint8_t b[94];
        } blob;
        std::memcpy(blob.b, a.b, 94);
        write_linear(c, lin, blob);
    }
    fninit_state(c);
}

void exec_frstor(Cpu& c, const Insn& in)
{
    begin(c);
    SaveArea a {};
    unsigned n = env_size(in);
    uint64_t lin = mem_linear(c, in);
    if (n == 28) {
        a = read_linear<SaveArea>(c, lin);
    } else {
        struct B94 {
            uint8_t b[94];
        } blob = read_linear<B94>(c, lin);
        std::memcpy(a.b, blob.b, 94);
    }
    load_env(c, in, a.b);
    for (unsigned i = 0; i < 8; ++i) {
        M80 m;
        std::memcpy(m.b, a.b + n + 10 * i, 10);
        F80 v = from_m80(m);
        std::memcpy(c.fx.data() + kSt + 16 * i, &v.mant, 8);
        std::memcpy(c.fx.data() + kSt + 16 * i + 8, &v.se, 2);
    }
}

} // namespace

void register_x87_control(HandlerTable& t)
{
    t[ZYDIS_MNEMONIC_FNINIT] = &exec_fninit;
    t[ZYDIS_MNEMONIC_FNCLEX] = &exec_fnclex;
    t[ZYDIS_MNEMONIC_FLDCW] = &exec_fldcw;
    t[ZYDIS_MNEMONIC_FNSTCW] = &exec_fnstcw;
    t[ZYDIS_MNEMONIC_FNSTSW] = &exec_fnstsw;
    t[ZYDIS_MNEMONIC_FWAIT] = &exec_fwait;
    t[ZYDIS_MNEMONIC_FNSTENV] = &exec_fnstenv;
    t[ZYDIS_MNEMONIC_FLDENV] = &exec_fldenv;
    t[ZYDIS_MNEMONIC_FNSAVE] = &exec_fnsave;
    t[ZYDIS_MNEMONIC_FRSTOR] = &exec_frstor;
}

} // namespace vessel::soft::x87
