// Soft engine: MOVS STOS LODS CMPS SCAS with REP/REPE/REPNE, DF, address size, segment
// override, overlapping copies, page crossings, faults mid-string and REP restarts.
#include <vector>

#include "soft_int_test_support.h"

namespace vessel::soft::testing {
namespace {

using Xbyak::CodeGenerator;

class SoftIntString : public SoftIntProgram { };

constexpr uint64_t kSrc = 0x400000, kDst = 0x600000;

void fill_pattern(uint8_t* p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; ++i)
        p[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 8));
}

// rep movs{b,w,d,q} with element size S.
void emit_rep_movs(CodeGenerator& g, unsigned s)
{
    g.rep();
    switch (s) {
    case 1: g.movsb(); break;
    case 2: g.movsw(); break;
    case 4: g.movsd(); break;
    default: g.movsq(); break;
    }
}

TEST_F(SoftIntString, RepMovsForwardAndBackward)
{
    for (unsigned s : { 1u, 2u, 4u, 8u }) {
        for (bool back : { false, true }) {
            for (uint64_t count : { 0ULL, 1ULL, 3ULL, 1000ULL, 5000ULL }) {
                std::vector<uint8_t> want(0x10000 + 64);
                fill_pattern(ram(kSrc), 0x10000, static_cast<uint8_t>(s + count));
                std::memset(ram(kDst), 0xee, 0x10000 + 64);
                std::memcpy(want.data(), ram(kDst), want.size());
                // Unaligned start addresses; backward copies start at the last element.
                uint64_t first = back ? (count ? (count - 1) * s : 0) : 0;
                uint64_t src = kSrc + 3 + first, dst = kDst + 5 + first;
                std::memcpy(want.data() + 5, ram(kSrc + 3), count * s);
                CodeGenerator g;
                if (back)
                    g.std();
                emit_rep_movs(g, s);
                g.cld();
                g.hlt();
                cpu().gpr[RSI] = src;
                cpu().gpr[RDI] = dst;
                cpu().gpr[RCX] = count;
                ASSERT_FALSE(run_code(g).has_value());
                int64_t delta = static_cast<int64_t>(count * s) * (back ? -1 : 1);
                EXPECT_EQ(cpu().gpr[RSI], src + delta) << s << " " << back << " " << count;
                EXPECT_EQ(cpu().gpr[RDI], dst + delta);
                EXPECT_EQ(cpu().gpr[RCX], 0u);
                EXPECT_EQ(std::memcmp(ram(kDst), want.data(), want.size()), 0) << s << " " << back << " " << count;
            }
        }
    }
}

TEST_F(SoftIntString, OverlappingMovsHasElementByElementSemantics)
{
    constexpr uint64_t kBuf = 0x800000;
    constexpr uint64_t kCount = 300; // crosses pages for the larger element sizes
    for (unsigned s : { 1u, 2u, 4u, 8u }) {
        for (bool back : { false, true }) {
            for (int dist = -17; dist <= 17; ++dist) {
                // Reference: n successive element moves on a host copy.
                std::vector<uint8_t> ref(8192);
                fill_pattern(ref.data(), ref.size(), static_cast<uint8_t>(dist * 3 + s));
                std::memcpy(ram(kBuf), ref.data(), ref.size());
                uint64_t src = 4096, dst = 4096 + dist;
                for (uint64_t k = 0; k < kCount; ++k) {
                    int64_t off = back ? -static_cast<int64_t>(k * s) : static_cast<int64_t>(k * s);
                    uint8_t tmp[8];
                    std::memcpy(tmp, &ref[src + off], s);
                    std::memcpy(&ref[dst + off], tmp, s);
                }
                CodeGenerator g;
                if (back)
                    g.std();
                emit_rep_movs(g, s);
                g.cld();
                g.hlt();
                cpu().gpr[RSI] = kBuf + src;
                cpu().gpr[RDI] = kBuf + dst;
                cpu().gpr[RCX] = kCount;
                ASSERT_FALSE(run_code(g).has_value());
                ASSERT_EQ(std::memcmp(ram(kBuf), ref.data(), ref.size()), 0)
                    << "size " << s << " back " << back << " dist " << dist;
            }
        }
    }
    // The classic: a forward MOVSB one byte ahead of its source replicates the first byte.
    std::memset(ram(kBuf), 0, 64);
    *ram(kBuf) = 0xab;
    CodeGenerator g;
    g.rep();
    g.movsb();
    g.hlt();
    cpu().gpr[RSI] = kBuf;
    cpu().gpr[RDI] = kBuf + 1;
    cpu().gpr[RCX] = 40;
    ASSERT_FALSE(run_code(g).has_value());
    for (int i = 0; i <= 40; ++i)
        EXPECT_EQ(*ram(kBuf + i), 0xab) << i;
    EXPECT_EQ(*ram(kBuf + 41), 0);
}

TEST_F(SoftIntString, RepStosWidthsAndPageCrossing)
{
    struct Case {
        unsigned s;
        uint64_t rax;
    };
    for (Case c : { Case { 1, 0x1234'5678'9abc'def0 }, Case { 2, 0xbeef }, Case { 4, 0x0102'0304 },
             Case { 8, 0x1122'3344'5566'7788 }, Case { 8, 0 }, Case { 4, 0xffff'ffff } }) {
        for (bool back : { false, true }) {
            uint64_t count = 3000 / c.s + 3; // > one page
            uint64_t start = kDst + 0x1000 - 37;
            uint64_t first = back ? start + (count - 1) * c.s : start;
            std::memset(ram(kDst - 64), 0x11, 0x3000);
            CodeGenerator g;
            if (back)
                g.std();
            g.rep();
            switch (c.s) {
            case 1: g.stosb(); break;
            case 2: g.stosw(); break;
            case 4: g.stosd(); break;
            default: g.stosq(); break;
            }
            g.cld();
            g.hlt();
            cpu().gpr[RAX] = c.rax;
            cpu().gpr[RDI] = first;
            cpu().gpr[RCX] = count;
            ASSERT_FALSE(run_code(g).has_value());
            for (uint64_t i = 0; i < count; ++i) {
                uint64_t v = 0;
                std::memcpy(&v, ram(start + i * c.s), c.s);
                ASSERT_EQ(v, c.rax & size_mask(c.s)) << c.s << " " << back << " " << i;
            }
            EXPECT_EQ(*ram(start - 1), 0x11);
            EXPECT_EQ(*ram(start + count * c.s), 0x11);
            EXPECT_EQ(cpu().gpr[RDI], back ? start - c.s : start + count * c.s);
        }
    }
}

TEST_F(SoftIntString, FaultMidStringLeavesRegistersAtTheFaultingIteration)
{
    constexpr uint64_t kHole = kDst + 0x2000;
    unmap(kHole);
    // STOSD towards the unmapped page: 0x1000 bytes fit, the iteration at kHole faults.
    CodeGenerator g;
    g.rep();
    g.stosd();
    g.hlt();
    cpu().gpr[RDI] = kHole - 0x1000;
    cpu().gpr[RCX] = 2000;
    cpu().gpr[RAX] = 0x5a5a'5a5a;
    auto f = run_code(g);
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(f->vector, kExcPF);
    EXPECT_EQ(f->cr2, kHole);
    EXPECT_EQ(f->error_code, kPfWrite);
    EXPECT_EQ(cpu().gpr[RDI], kHole);
    EXPECT_EQ(cpu().gpr[RCX], 2000u - 0x400);
    EXPECT_EQ(cpu().rip, kCodeAddr);
    EXPECT_EQ(peek<uint32_t>(kHole - 4), 0x5a5a'5a5au);
    // MOVSQ reading from the hole, element straddling into it (unaligned): faults on the
    // element that touches the hole, with the previous ones done.
    CodeGenerator m;
    m.rep();
    m.movsq();
    m.hlt();
    cpu().gpr[RSI] = kHole - 0x100 - 4;
    cpu().gpr[RDI] = kSrc;
    cpu().gpr[RCX] = 100;
    f = run_code(m);
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(f->vector, kExcPF);
    EXPECT_EQ(f->cr2, kHole);
    EXPECT_EQ(f->error_code, 0u);
    EXPECT_EQ(cpu().gpr[RCX], 100u - 0x20);
    EXPECT_EQ(cpu().gpr[RSI], kHole - 4);
    EXPECT_EQ(cpu().gpr[RDI], kSrc + 0x100);
    // Backward from above the hole: the first element below it faults.
    cpu().gpr[RSI] = kHole + 0x1000 + 0x80;
    cpu().gpr[RDI] = kSrc + 0x1000;
    cpu().gpr[RCX] = 1000;
    set_rflags_bits(cpu(), kDF, kDF);
    f = run_code(m);
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(f->cr2, kHole + 0xff8);
    EXPECT_EQ(cpu().gpr[RSI], kHole + 0xff8);
    EXPECT_EQ(cpu().gpr[RCX], 1000u - 0x11);
    set_rflags_bits(cpu(), 0, kDF);
}

TEST_F(SoftIntString, HugeRepRestartsUntilDone)
{
    constexpr uint64_t kBytes = 3 << 20;
    std::memset(ram(kSrc), 0, kBytes);
    CodeGenerator g;
    g.mov(g.rax, 0x0101'0101'0101'0101);
    g.rep();
    g.stosq();
    g.mov(g.rsi, kSrc);
    g.mov(g.rdi, kSrc + kBytes);
    g.mov(g.ecx, kBytes);
    g.rep();
    g.movsb();
    g.hlt();
    cpu().gpr[RDI] = kSrc;
    cpu().gpr[RCX] = kBytes / 8;
    ASSERT_FALSE(run_code(g).has_value());
    EXPECT_EQ(cpu().gpr[RCX], 0u);
    EXPECT_EQ(cpu().gpr[RDI], kSrc + 2 * kBytes);
    // Each REP execution is bounded: many executions of the two REP instructions.
    EXPECT_GT(executions(), kBytes / (64 * 1024));
    for (uint64_t off = 0; off < 2 * kBytes; off += 4093)
        ASSERT_EQ(*ram(kSrc + off), 1) << off;
}

TEST_F(SoftIntString, CompareAndScan)
{
    constexpr uint64_t kA = kSrc, kB = kDst;
    fill_pattern(ram(kA), 256, 9);
    std::memcpy(ram(kB), ram(kA), 256);
    *ram(kB + 37) ^= 0x80; // differs at index 37: A[37] < B[37] or not
    bool a_below = *ram(kA + 37) < *ram(kB + 37);
    CodeGenerator g;
    g.repe();
    g.cmpsb();
    g.hlt();
    cpu().gpr[RSI] = kA;
    cpu().gpr[RDI] = kB;
    cpu().gpr[RCX] = 256;
    ASSERT_FALSE(run_code(g).has_value());
    EXPECT_EQ(cpu().gpr[RCX], 256u - 38);
    EXPECT_EQ(cpu().gpr[RSI], kA + 38);
    EXPECT_EQ(cpu().gpr[RDI], kB + 38);
    EXPECT_FALSE(flags() & kZF);
    EXPECT_EQ((flags() & kCF) != 0, a_below);
    // Equal buffers: runs to the end with ZF = 1.
    *ram(kB + 37) ^= 0x80;
    cpu().gpr[RSI] = kA;
    cpu().gpr[RDI] = kB;
    cpu().gpr[RCX] = 256;
    ASSERT_FALSE(run_code(g).has_value());
    EXPECT_EQ(cpu().gpr[RCX], 0u);
    EXPECT_TRUE(flags() & kZF);
    // REPNE SCASW finds a word; REPE SCASQ skips equal qwords.
    for (int i = 0; i < 100; ++i)
        poke<uint16_t>(kA + 2 * i, static_cast<uint16_t>(0x100 + i));
    CodeGenerator s;
    s.repne();
    s.scasw();
    s.hlt();
    cpu().gpr[RAX] = 0xffff'0000'0000'0100 + 57;
    cpu().gpr[RDI] = kA;
    cpu().gpr[RCX] = 100;
    ASSERT_FALSE(run_code(s).has_value());
    EXPECT_EQ(cpu().gpr[RDI], kA + 2 * 58);
    EXPECT_EQ(cpu().gpr[RCX], 100u - 58);
    EXPECT_TRUE(flags() & kZF);
    for (int i = 0; i < 10; ++i)
        poke<uint64_t>(kB + 8 * i, i < 6 ? 7 : 8);
    CodeGenerator q;
    q.repe();
    q.scasq();
    q.hlt();
    cpu().gpr[RAX] = 7;
    cpu().gpr[RDI] = kB;
    cpu().gpr[RCX] = 10;
    ASSERT_FALSE(run_code(q).has_value());
    EXPECT_EQ(cpu().gpr[RCX], 3u);
    EXPECT_EQ(flags() & (kZF | kCF | kSF), kCF | kSF); // 7 - 8
    // A long REPNE SCASB that needs restarts and finds nothing.
    std::memset(ram(kA), 1, 20000);
    CodeGenerator n;
    n.repne();
    n.scasb();
    n.hlt();
    cpu().gpr[RAX] = 0;
    cpu().gpr[RDI] = kA;
    cpu().gpr[RCX] = 20000;
    ASSERT_FALSE(run_code(n).has_value());
    EXPECT_EQ(cpu().gpr[RCX], 0u);
    EXPECT_EQ(cpu().gpr[RDI], kA + 20000);
    EXPECT_FALSE(flags() & kZF);
    EXPECT_GT(executions(), 4u);
    // RCX = 0: nothing happens, flags kept.
    set_flags(kZF | kCF);
    cpu().gpr[RCX] = 0;
    cpu().gpr[RDI] = kA;
    ASSERT_FALSE(run_code(n).has_value());
    EXPECT_EQ(cpu().gpr[RDI], kA);
    EXPECT_EQ(flags(), kZF | kCF);
}

TEST_F(SoftIntString, LoadsSingleElementsAndDirection)
{
    poke<uint64_t>(kSrc, 0x8877'6655'4433'2211);
    CodeGenerator g;
    g.lodsb();
    g.mov(g.r8, g.rax);
    g.lodsw();
    g.mov(g.r9, g.rax);
    g.lodsd(); // zero-extends RAX
    g.mov(g.r10, g.rax);
    g.std();
    g.lodsb(); // reads the byte at RSI, then RSI - 1
    g.mov(g.r11, g.rax);
    g.movsb();
    g.cmpsb();
    g.scasb();
    g.stosb();
    g.cld();
    g.hlt();
    cpu().gpr[RAX] = 0xffff'ffff'ffff'ffff;
    cpu().gpr[RSI] = kSrc;
    cpu().gpr[RDI] = kDst + 0x10;
    ASSERT_FALSE(run_code(g).has_value());
    EXPECT_EQ(cpu().gpr[R8], 0xffff'ffff'ffff'ff11u);
    EXPECT_EQ(cpu().gpr[R9], 0xffff'ffff'ffff'3322u);
    EXPECT_EQ(cpu().gpr[R10], 0x7766'5544u);
    EXPECT_EQ(cpu().gpr[R11], 0x7766'5588u); // the byte at kSrc + 7
    EXPECT_EQ(cpu().gpr[RSI], kSrc + 4); // lodsb, movsb, cmpsb backwards from kSrc + 7
    EXPECT_EQ(cpu().gpr[RDI], kDst + 0x10 - 4);
    EXPECT_EQ(*ram(kDst + 0x10), 0x77); // movsb copied the byte at kSrc + 6
    EXPECT_EQ(*ram(kDst + 0x10 - 3), 0x88); // stosb of AL
    // rep lodsq ends with the last element in RAX.
    CodeGenerator r;
    r.rep();
    r.lodsq();
    r.hlt();
    for (int i = 0; i < 50; ++i)
        poke<uint64_t>(kSrc + 8 * i, 1000 + i);
    cpu().gpr[RSI] = kSrc;
    cpu().gpr[RCX] = 50;
    ASSERT_FALSE(run_code(r).has_value());
    EXPECT_EQ(cpu().gpr[RAX], 1049u);
    EXPECT_EQ(cpu().gpr[RSI], kSrc + 400);
}

TEST_F(SoftIntString, AddressSizeAndSegmentOverride)
{
    // 67 prefix: ESI/EDI/ECX, written back zero-extended.
    fill_pattern(ram(kSrc), 64, 1);
    CodeGenerator g;
    g.db(0x67);
    g.rep();
    g.movsb();
    g.hlt();
    cpu().gpr[RSI] = 0xabcd'0000'0000'0000 | kSrc;
    cpu().gpr[RDI] = 0x1234'0000'0000'0000 | kDst;
    cpu().gpr[RCX] = 0xffff'0000'0000'0010;
    ASSERT_FALSE(run_code(g).has_value());
    EXPECT_EQ(cpu().gpr[RSI], kSrc + 16);
    EXPECT_EQ(cpu().gpr[RDI], kDst + 16);
    EXPECT_EQ(cpu().gpr[RCX], 0u);
    EXPECT_EQ(std::memcmp(ram(kDst), ram(kSrc), 16), 0);
    // FS override applies to the source; the destination stays ES.
    cpu().segbase[FS] = 0x1000;
    fill_pattern(ram(kSrc + 0x1000), 64, 77);
    CodeGenerator f;
    f.db(0x64);
    f.rep();
    f.movsq();
    f.db(0x64);
    f.lodsb();
    f.hlt();
    cpu().gpr[RSI] = kSrc;
    cpu().gpr[RDI] = kDst + 0x100;
    cpu().gpr[RCX] = 4;
    ASSERT_FALSE(run_code(f).has_value());
    EXPECT_EQ(std::memcmp(ram(kDst + 0x100), ram(kSrc + 0x1000), 32), 0);
    EXPECT_EQ(cpu().gpr[RAX] & 0xff, *ram(kSrc + 0x1000 + 32));
}

TEST_F(SoftIntString, MovsdAndCmpsdShareTheirMnemonicsWithSse2)
{
    fill_pattern(ram(kSrc), 64, 5);
    std::memset(ram(kDst), 0, 64);
    CodeGenerator g;
    g.movsd(); // string: one dword, RSI/RDI + 4
    g.movsd(g.xmm1, g.qword[g.rsi]); // SSE2 scalar load
    g.movsd(g.qword[g.rdi], g.xmm1); // SSE2 scalar store
    g.cmpsd(g.xmm1, g.xmm1, 4); // SSE2 compare (not-equal): all zeros unless NaN
    g.movq(g.r8, g.xmm1);
    g.cmpsd(); // string compare of the dwords at RSI and RDI: equal
    g.hlt();
    poke<uint64_t>(kSrc + 4, 0x3ff0'0000'0000'0000); // 1.0: not a NaN
    cpu().gpr[RSI] = kSrc;
    cpu().gpr[RDI] = kDst;
    ASSERT_FALSE(run_code(g).has_value());
    EXPECT_EQ(std::memcmp(ram(kDst), ram(kSrc), 12), 0);
    EXPECT_EQ(cpu().gpr[RSI], kSrc + 8);
    EXPECT_EQ(cpu().gpr[RDI], kDst + 8);
    EXPECT_EQ(cpu().gpr[R8], 0u);
    EXPECT_TRUE(flags() & kZF);
}

} // namespace
} // namespace vessel::soft::testing
