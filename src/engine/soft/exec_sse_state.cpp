// x87/SSE state management: FXSAVE/FXRSTOR (legacy and REX.W forms), XSAVE/XSAVEOPT/XRSTOR
// (standard format, XCR0 limited to x87|SSE), LDMXCSR/STMXCSR and EMMS. Every memory image is
// read or written with one access, so a fault (#PF on either page) leaves memory and registers
// unchanged.
#include "engine/soft/exec_sse_common.h"

namespace vessel::soft::sse {

namespace {

constexpr uint64_t kXcrX87 = 1, kXcrSse = 2;
constexpr unsigned kXsaveHeader = 512;

template<unsigned N>
struct Bytes {
    uint8_t b[N];
};

// The x87 part of an image (bytes 0..23 and 32..159) in the 64-bit (REX.W) or the 32-bit
// layout (FIP/FDP truncated to 32 bits with FCS/FDS = 0, as CPUs that deprecate FCS/FDS save).
void save_x87(const Cpu& c, uint8_t* img, bool rexw)
{
    std::memcpy(img, c.fx.data(), 24);
    img[5] = 0;
    if (!rexw) {
        uint32_t fip = static_cast<uint32_t>(fx_get<uint64_t>(c, kFip));
        uint32_t fdp = static_cast<uint32_t>(fx_get<uint64_t>(c, kFdp));
        std::memset(img + 8, 0, 16);
        std::memcpy(img + 8, &fip, 4);
        std::memcpy(img + 16, &fdp, 4);
    }
    for (unsigned i = 0; i < 8; ++i) {
        std::memcpy(img + kSt + 16 * i, c.fx.data() + kSt + 16 * i, 10);
        std::memset(img + kSt + 16 * i + 10, 0, 6);
    }
}

void load_x87(Cpu& c, const uint8_t* img, bool rexw)
{
    std::memcpy(c.fx.data(), img, 8);
    c.fx[5] = 0;
    fx_set<uint16_t>(c, kFcw, fcw_value(fx_get<uint16_t>(c, kFcw)));
    fx_set<uint16_t>(c, kFop, fx_get<uint16_t>(c, kFop) & 0x7ff);
    uint64_t fip, fdp;
    if (rexw) {
        std::memcpy(&fip, img + 8, 8);
        std::memcpy(&fdp, img + 16, 8);
    } else {
        uint32_t ip32, dp32;
        std::memcpy(&ip32, img + 8, 4);
        std::memcpy(&dp32, img + 16, 4);
        fip = ip32;
        fdp = dp32;
    }
    fx_set<uint64_t>(c, kFip, fip);
    fx_set<uint64_t>(c, kFdp, fdp);
    for (unsigned i = 0; i < 8; ++i) {
        std::memcpy(c.fx.data() + kSt + 16 * i, img + kSt + 16 * i, 10);
        std::memset(c.fx.data() + kSt + 16 * i + 10, 0, 6);
    }
    update_es(c);
}

void init_x87(Cpu& c)
{
    fx_set<uint16_t>(c, kFcw, kFcwInit);
    fx_set<uint16_t>(c, kFsw, 0);
    ftw(c) = 0;
    c.fx[5] = 0;
    fx_set<uint16_t>(c, kFop, 0);
    fx_set<uint64_t>(c, kFip, 0);
    fx_set<uint64_t>(c, kFdp, 0);
    std::memset(c.fx.data() + kSt, 0, 128);
}

unsigned xmm_count(const Cpu& c)
{
    return c.long_mode() ? 16 : 8;
}

void check_fxsr(const Cpu& c)
{
    if (c.cr0 & (kCr0Em | kCr0Ts)) [[unlikely]]
        raise_fault(kExcNM);
}

void exec_fxsave(Cpu& c, const Insn& in)
{
    check_fxsr(c);
    uint64_t lin = mem_addr(c, in, 16);
    bool rexw = in.mnemonic == ZYDIS_MNEMONIC_FXSAVE64;
    Bytes<416> img;
    save_x87(c, img.b, rexw);
    uint32_t mx = mxcsr(c), mask = kMxcsrWritable;
    std::memcpy(img.b + kMxcsr, &mx, 4);
    std::memcpy(img.b + kMxcsrMask, &mask, 4);
    std::memcpy(img.b + kXmm, c.fx.data() + kXmm, 256);
    if (xmm_count(c) == 16) {
        write_linear(c, lin, img);
    } else {
        Bytes<288> legacy;
        std::memcpy(legacy.b, img.b, sizeof(legacy));
        write_linear(c, lin, legacy);
    }
}

void exec_fxrstor(Cpu& c, const Insn& in)
{
    check_fxsr(c);
    uint64_t lin = mem_addr(c, in, 16);
    bool rexw = in.mnemonic == ZYDIS_MNEMONIC_FXRSTOR64;
    Bytes<416> img;
    if (xmm_count(c) == 16)
        img = read_linear<Bytes<416>>(c, lin);
    else
        std::memcpy(img.b, read_linear<Bytes<288>>(c, lin).b, 288);
    uint32_t mx;
    std::memcpy(&mx, img.b + kMxcsr, 4);
    if (mx & ~kMxcsrWritable)
        raise_fault(kExcGP, 0);
    load_x87(c, img.b, rexw);
    set_mxcsr(c, mx);
    std::memcpy(c.fx.data() + kXmm, img.b + kXmm, 16 * xmm_count(c));
}

void check_xsave(const Cpu& c)
{
    if (!(c.cr4 & kCr4Osxsave)) [[unlikely]]
        raise_ud();
    if (c.cr0 & kCr0Ts) [[unlikely]]
        raise_fault(kExcNM);
}

uint64_t rfbm(const Cpu& c)
{
    return c.xcr0 & ((c.gpr[RDX] << 32) | (c.gpr[RAX] & 0xffffffffULL));
}

using XsaveArea = Bytes<kXsaveHeader + 64>;

// XSAVE and XSAVEOPT (without init/modified tracking every requested component is in use, so
// XSAVEOPT saves exactly what XSAVE saves). The header's other bytes are left untouched.
void exec_xsave(Cpu& c, const Insn& in)
{
    check_xsave(c);
    uint64_t lin = mem_addr(c, in, 64);
    bool rexw = in.mnemonic == ZYDIS_MNEMONIC_XSAVE64 || in.mnemonic == ZYDIS_MNEMONIC_XSAVEOPT64;
    uint64_t rf = rfbm(c);
    XsaveArea area = read_linear<XsaveArea>(c, lin);
    if (rf & kXcrX87)
        save_x87(c, area.b, rexw);
    if (rf & kXcrSse) {
        uint32_t mx = mxcsr(c), mask = kMxcsrWritable;
        std::memcpy(area.b + kMxcsr, &mx, 4);
        std::memcpy(area.b + kMxcsrMask, &mask, 4);
        std::memcpy(area.b + kXmm, c.fx.data() + kXmm, 16 * xmm_count(c));
    }
    uint64_t bv;
    std::memcpy(&bv, area.b + kXsaveHeader, 8);
    bv = (bv & ~rf) | rf;
    std::memcpy(area.b + kXsaveHeader, &bv, 8);
    write_linear(c, lin, area);
}

void exec_xrstor(Cpu& c, const Insn& in)
{
    check_xsave(c);
    uint64_t lin = mem_addr(c, in, 64);
    bool rexw = in.mnemonic == ZYDIS_MNEMONIC_XRSTOR64;
    uint64_t rf = rfbm(c);
    XsaveArea area = read_linear<XsaveArea>(c, lin);
    uint64_t hdr[3];
    std::memcpy(hdr, area.b + kXsaveHeader, sizeof(hdr));
    // Standard form only (no XSAVEC/XSAVES): XCOMP_BV and the next 8 bytes must be zero, and
    // XSTATE_BV may only name components enabled in XCR0.
    if (hdr[1] || hdr[2] || (hdr[0] & ~c.xcr0))
        raise_fault(kExcGP, 0);
    uint32_t mx;
    std::memcpy(&mx, area.b + kMxcsr, 4);
    if ((rf & kXcrSse) && (mx & ~kMxcsrWritable))
        raise_fault(kExcGP, 0);
    if (rf & kXcrX87) {
        if (hdr[0] & kXcrX87)
            load_x87(c, area.b, rexw);
        else
            init_x87(c);
    }
    if (rf & kXcrSse) {
        set_mxcsr(c, mx); // the standard form loads MXCSR whatever XSTATE_BV[1] says
        if (hdr[0] & kXcrSse)
            std::memcpy(c.fx.data() + kXmm, area.b + kXmm, 16 * xmm_count(c));
        else
            std::memset(c.fx.data() + kXmm, 0, 16 * xmm_count(c));
    }
}

void exec_ldmxcsr(Cpu& c, const Insn& in)
{
    check_sse(c);
    uint32_t v = read_linear<uint32_t>(c, mem_linear(c, in));
    if (v & ~kMxcsrWritable)
        raise_fault(kExcGP, 0);
    set_mxcsr(c, v);
}

void exec_stmxcsr(Cpu& c, const Insn& in)
{
    check_sse(c);
    write_linear<uint32_t>(c, mem_linear(c, in), mxcsr(c));
}

void exec_emms(Cpu& c, const Insn&)
{
    if (c.cr0 & kCr0Em)
        raise_ud();
    if (c.cr0 & kCr0Ts)
        raise_fault(kExcNM);
    check_pending_x87(c);
    ftw(c) = 0;
}

} // namespace

void register_sse_state(HandlerTable& t)
{
    t[ZYDIS_MNEMONIC_FXSAVE] = &exec_fxsave;
    t[ZYDIS_MNEMONIC_FXSAVE64] = &exec_fxsave;
    t[ZYDIS_MNEMONIC_FXRSTOR] = &exec_fxrstor;
    t[ZYDIS_MNEMONIC_FXRSTOR64] = &exec_fxrstor;
    t[ZYDIS_MNEMONIC_XSAVE] = &exec_xsave;
    t[ZYDIS_MNEMONIC_XSAVE64] = &exec_xsave;
    t[ZYDIS_MNEMONIC_XSAVEOPT] = &exec_xsave;
    t[ZYDIS_MNEMONIC_XSAVEOPT64] = &exec_xsave;
    t[ZYDIS_MNEMONIC_XRSTOR] = &exec_xrstor;
    t[ZYDIS_MNEMONIC_XRSTOR64] = &exec_xrstor;
    t[ZYDIS_MNEMONIC_LDMXCSR] = &exec_ldmxcsr;
    t[ZYDIS_MNEMONIC_STMXCSR] = &exec_stmxcsr;
    t[ZYDIS_MNEMONIC_EMMS] = &exec_emms;
}

} // namespace vessel::soft::sse
