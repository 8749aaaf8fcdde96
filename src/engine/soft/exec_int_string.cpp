// String instructions: MOVS STOS LODS CMPS SCAS in all widths, with REP/REPE/REPNE, DF, the
// address size (RSI/RDI/RCX truncated to it) and a segment override on the source (ES is fixed
// for the destination).
//
// REP MOVS/STOS copy/fill whole runs inside a page with memmove/memset on host pointers when both
// sides are RAM, keeping the element-by-element semantics for overlapping MOVS (a forward MOVSB
// onto its own source replicates the pattern). A REP instruction does a bounded amount of work
// per execution; while RCX is not exhausted it rewinds RIP to itself so the block loop runs it
// again (interrupts can be taken in between; a store to MMIO or to a code page that sets
// stop_block needs no earlier exit, as REP instructions end their block anyway). Registers are
// committed after every element/run, so a fault leaves RSI/RDI/RCX at the faulting iteration.
#include <algorithm>
#include <cstring>

#include "engine/soft/exec_int.h"

namespace vessel::soft::integer {

namespace {

enum class Str : uint8_t { Movs, Stos, Lods, Cmps, Scas };

constexpr uint64_t kRepMaxBytes = 64 * 1024; // bulk bytes per execution of a REP instruction
constexpr unsigned kRepMaxElements = 4096; // element-wise iterations per execution

inline void advance(Cpu& c, unsigned reg, const Insn& in, int64_t delta)
{
    write_gpr(c, reg, in.asize, (c.gpr[reg] + static_cast<uint64_t>(delta)) & addr_mask(in.asize));
}

// One iteration of K on S-byte elements.
template<Str K, unsigned S>
inline void string_one(Cpu& c, const Insn& in)
{
    const uint64_t amask = addr_mask(in.asize);
    const int64_t step = df_set(c) ? -static_cast<int64_t>(S) : static_cast<int64_t>(S);
    const uint64_t si = c.gpr[RSI] & amask, di = c.gpr[RDI] & amask;
    switch (K) {
    case Str::Movs: {
        uint64_t v = read_mem(c, seg_linear(c, string_src_seg(in), si), S);
        write_mem(c, seg_linear(c, ES, di), S, v);
        advance(c, RSI, in, step);
        advance(c, RDI, in, step);
        break;
    }
    case Str::Stos:
        write_mem(c, seg_linear(c, ES, di), S, c.gpr[RAX]);
        advance(c, RDI, in, step);
        break;
    case Str::Lods: {
        uint64_t v = read_mem(c, seg_linear(c, string_src_seg(in), si), S);
        write_gpr(c, RAX, S, v);
        advance(c, RSI, in, step);
        break;
    }
    case Str::Cmps: {
        uint64_t a = read_mem(c, seg_linear(c, string_src_seg(in), si), S);
        uint64_t b = read_mem(c, seg_linear(c, ES, di), S);
        set_lazy(c, FlagOp::Sub, S, a - b, a, b);
        advance(c, RSI, in, step);
        advance(c, RDI, in, step);
        break;
    }
    case Str::Scas: {
        uint64_t a = c.gpr[RAX] & size_mask(S);
        uint64_t b = read_mem(c, seg_linear(c, ES, di), S);
        set_lazy(c, FlagOp::Sub, S, a - b, a, b);
        advance(c, RDI, in, step);
        break;
    }
    }
}

// Number of S-byte elements, starting with the one at offset `off` (linear `lin`) and going in
// the string direction, that lie wholly inside lin's page without wrapping the offset.
template<unsigned S>
inline uint64_t run_length(uint64_t lin, uint64_t off, uint64_t amask, bool back)
{
    uint64_t in_page = lin & 0xfff;
    if (in_page + S > 0x1000 || (amask != ~0ULL && amask - off < S - 1))
        return 0; // this element crosses a page or wraps the offset
    if (back)
        return std::min(in_page / S, off / S) + 1;
    uint64_t n = (0x1000 - in_page) / S;
    if (amask != ~0ULL)
        n = std::min(n, (amask - off + 1) / S);
    return n;
}

// Copies n elements between host ranges [src, src+n*S) and [dst, dst+n*S) (low ends) with the
// semantics of n successive element moves in the string direction.
template<unsigned S>
void copy_elements(uint8_t* dst, const uint8_t* src, uint64_t n, bool back)
{
    const uint64_t len = n * S;
    const auto s = reinterpret_cast<uintptr_t>(src), d = reinterpret_cast<uintptr_t>(dst);
    const bool dst_ahead = back ? (d < s && s < d + len) : (s < d && d < s + len);
    if (!dst_ahead) {
        // Every element reads source bytes no earlier element wrote: a plain memmove.
        std::memmove(dst, src, len);
        return;
    }
    const uint64_t dist = back ? s - d : d - s;
    if (!back && dist >= S) {
        // Forward onto its own source, at least one element apart: the result repeats the first
        // `dist` bytes. Copy in dist-sized pieces, each reading only finished bytes.
        for (uint64_t off = 0; off < len; off += dist)
            std::memcpy(dst + off, src + off, std::min(dist, len - off));
        return;
    }
    for (uint64_t k = 0; k < n; ++k) {
        uint64_t i = back ? n - 1 - k : k;
        std::memmove(dst + i * S, src + i * S, S);
    }
}

template<unsigned S>
void fill_elements(uint8_t* dst, uint64_t n, uint64_t value)
{
    uint64_t v = value & size_mask(S);
    bool uniform = S == 1 || v == 0 || v == size_mask(S);
    if (uniform) {
        std::memset(dst, static_cast<int>(v & 0xff), n * S);
        return;
    }
    for (uint64_t i = 0; i < n; ++i)
        std::memcpy(dst + i * S, &v, S);
}

// REP MOVS/STOS: bulk runs, element-wise where the runs cannot be done on host memory.
// Returns the remaining count.
template<Str K, unsigned S>
uint64_t rep_bulk(Cpu& c, const Insn& in, uint64_t count)
{
    const uint64_t amask = addr_mask(in.asize);
    const bool back = df_set(c);
    const int64_t dir = back ? -1 : 1;
    uint64_t bytes = 0;
    unsigned elements = 0;
    while (count != 0 && bytes < kRepMaxBytes && elements < kRepMaxElements) {
        const uint64_t si = c.gpr[RSI] & amask, di = c.gpr[RDI] & amask;
        const uint64_t ld = seg_linear(c, ES, di);
        uint64_t n = std::min(count, run_length<S>(ld, di, amask, back));
        uint64_t ls = 0;
        if (K == Str::Movs) {
            ls = seg_linear(c, string_src_seg(in), si);
            n = std::min(n, run_length<S>(ls, si, amask, back));
        }
        n = std::min(n, (kRepMaxBytes - bytes + S - 1) / S);
        bool done = false;
        if (n > 1) {
            // The first element's accesses, in its order, fault exactly like the element would.
            const uint8_t* hs = nullptr;
            if (K == Str::Movs)
                hs = host_ptr(c, ls, S, Access::Read);
            uint8_t* hd = (K == Str::Stos || hs) ? host_ptr(c, ld, S, Access::Write) : nullptr;
            if (hd) {
                // The run lies in the same pages of RAM: host memory is contiguous within a page.
                uint64_t back_off = back ? (n - 1) * S : 0;
                if (K == Str::Movs)
                    copy_elements<S>(hd - back_off, hs - back_off, n, back);
                else
                    fill_elements<S>(hd - back_off, n, c.gpr[RAX]);
                int64_t delta = dir * static_cast<int64_t>(n * S);
                if (K == Str::Movs)
                    advance(c, RSI, in, delta);
                advance(c, RDI, in, delta);
                done = true;
            }
        }
        if (!done) {
            n = 1;
            string_one<K, S>(c, in);
            ++elements;
        }
        count -= n;
        bytes += n * S;
        write_gpr(c, RCX, in.asize, count);
    }
    return count;
}

template<Str K, unsigned S>
void exec_string(Cpu& c, const Insn& in)
{
    if (!(in.flags & (kFlagRep | kFlagRepne))) [[likely]] {
        string_one<K, S>(c, in);
        return;
    }
    uint64_t count = read_gpr(c, RCX, in.asize);
    if (count == 0)
        return;
    if (K == Str::Movs || K == Str::Stos) {
        count = rep_bulk<K, S>(c, in, count);
    } else {
        for (unsigned i = 0; count != 0 && i < kRepMaxElements; ++i) {
            string_one<K, S>(c, in);
            write_gpr(c, RCX, in.asize, --count);
            if (K == Str::Cmps || K == Str::Scas) {
                // REPE (F3) ends on a difference, REPNE (F2) on a match.
                if (flag_zf(c) != ((in.flags & kFlagRep) != 0))
                    return;
            }
        }
    }
    if (count != 0) {
        c.rip = c.insn_start; // not finished: run it again
        c.stop_block = true;
    }
}

} // namespace

// MOVSD and CMPSD name both the dword string instructions (one-byte map, A5/A7) and the SSE2
// scalar-double instructions (0F map), registered by the SSE group before us.
void exec_movsd_dispatch(Cpu& c, const Insn& in)
{
    if (in.opmap == 0)
        exec_string<Str::Movs, 4>(c, in);
    else
        call_previous(c, in);
}

void exec_cmpsd_dispatch(Cpu& c, const Insn& in)
{
    if (in.opmap == 0)
        exec_string<Str::Cmps, 4>(c, in);
    else
        call_previous(c, in);
}

void register_string(HandlerTable& t)
{
    set_handler(t, ZYDIS_MNEMONIC_MOVSD, &exec_movsd_dispatch);
    set_handler(t, ZYDIS_MNEMONIC_CMPSD, &exec_cmpsd_dispatch);
    set_handler(t, ZYDIS_MNEMONIC_MOVSB, &exec_string<Str::Movs, 1>);
    set_handler(t, ZYDIS_MNEMONIC_MOVSW, &exec_string<Str::Movs, 2>);
    set_handler(t, ZYDIS_MNEMONIC_MOVSQ, &exec_string<Str::Movs, 8>);
    set_handler(t, ZYDIS_MNEMONIC_STOSB, &exec_string<Str::Stos, 1>);
    set_handler(t, ZYDIS_MNEMONIC_STOSW, &exec_string<Str::Stos, 2>);
    set_handler(t, ZYDIS_MNEMONIC_STOSD, &exec_string<Str::Stos, 4>);
    set_handler(t, ZYDIS_MNEMONIC_STOSQ, &exec_string<Str::Stos, 8>);
    set_handler(t, ZYDIS_MNEMONIC_LODSB, &exec_string<Str::Lods, 1>);
    set_handler(t, ZYDIS_MNEMONIC_LODSW, &exec_string<Str::Lods, 2>);
    set_handler(t, ZYDIS_MNEMONIC_LODSD, &exec_string<Str::Lods, 4>);
    set_handler(t, ZYDIS_MNEMONIC_LODSQ, &exec_string<Str::Lods, 8>);
    set_handler(t, ZYDIS_MNEMONIC_CMPSB, &exec_string<Str::Cmps, 1>);
    set_handler(t, ZYDIS_MNEMONIC_CMPSW, &exec_string<Str::Cmps, 2>);
    set_handler(t, ZYDIS_MNEMONIC_CMPSQ, &exec_string<Str::Cmps, 8>);
    set_handler(t, ZYDIS_MNEMONIC_SCASB, &exec_string<Str::Scas, 1>);
    set_handler(t, ZYDIS_MNEMONIC_SCASW, &exec_string<Str::Scas, 2>);
    set_handler(t, ZYDIS_MNEMONIC_SCASD, &exec_string<Str::Scas, 4>);
    set_handler(t, ZYDIS_MNEMONIC_SCASQ, &exec_string<Str::Scas, 8>);
}

} // namespace vessel::soft::integer
