#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "arch/x86/layout.h"
#include "table_test_support.h"
#include "arch/x86/mptable.h"

using namespace vessel;

namespace {

using namespace vessel::table_test;




GuestMemory make_mem() { return GuestMemory::create(64 * layout::MiB).release_value(); }

struct Entry {
    uint8_t type;
    Bytes data;
};

struct Parsed {
    Bytes floating;
    Bytes config;
    std::vector<Entry> entries;
};

Parsed parse(const GuestMemory& mem)
{
    Parsed p;
    p.floating = read_bytes(mem, layout::kMpTable, 16);
    uint32_t config_addr = at<uint32_t>(p.floating, 4);
    uint16_t length = mem.read_obj<uint16_t>(config_addr + 4).value();
    p.config = read_bytes(mem, config_addr, length);
    size_t off = 44;
    while (off < p.config.size()) {
        uint8_t type = p.config[off];
        size_t len = type == 0 ? 20 : 8;
        EXPECT_LE(type, 4);
        EXPECT_LE(off + len, p.config.size());
        if (type > 4 || off + len > p.config.size())
            break;
        p.entries.push_back({ type, Bytes(p.config.begin() + off, p.config.begin() + off + len) });
        off += len;
    }
    EXPECT_EQ(off, p.config.size());
    return p;
}

} // namespace

TEST(MpTable, FloatingPointer)
{
    auto mem = make_mem();
    ASSERT_TRUE(build_mp_table(mem, 2).ok());
    Bytes fp = read_bytes(mem, layout::kMpTable, 16);
    EXPECT_EQ(std::memcmp(fp.data(), "_MP_", 4), 0);
    EXPECT_EQ(sum_of(fp), 0);
    EXPECT_EQ(fp[8], 1); // length in paragraphs
    EXPECT_EQ(fp[9], 4); // spec 1.4
    EXPECT_EQ(fp[11], 0); // feature byte 1: a configuration table follows
    uint32_t config = at<uint32_t>(fp, 4);
    EXPECT_EQ(config, layout::kMpTable + 16);
    EXPECT_EQ(config % 4, 0u);
}

TEST(MpTable, LinuxStyleScanFindsIt)
{
    auto mem = make_mem();
    ASSERT_TRUE(build_mp_table(mem, 1).ok());
    // Linux scans the last KiB of base memory (639 KiB) and the EBDA named by BDA 0x40e.
    uint16_t ebda_seg = mem.read_obj<uint16_t>(0x40e).value();
    EXPECT_EQ(ebda_seg, layout::kEbdaStart >> 4);
    EXPECT_EQ(mem.read_obj<uint16_t>(0x413).value(), 639);
    uint64_t found = 0;
    for (uint64_t a = uint64_t { ebda_seg } << 4; a < (uint64_t { ebda_seg } << 4) + 1024; a += 16) {
        Bytes p = read_bytes(mem, a, 16);
        if (std::memcmp(p.data(), "_MP_", 4) == 0 && sum_of(p) == 0) {
            found = a;
            break;
        }
    }
    EXPECT_EQ(found, layout::kMpTable);
}

TEST(MpTable, ConfigTableHeader)
{
    auto mem = make_mem();
    ASSERT_TRUE(build_mp_table(mem, 4).ok());
    Parsed p = parse(mem);
    const Bytes& c = p.config;
    EXPECT_EQ(std::memcmp(c.data(), "PCMP", 4), 0);
    EXPECT_EQ(sum_of(c), 0);
    EXPECT_EQ(c[6], 4); // spec rev
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(c.data() + 8), 8), "VESSEL  ");
    EXPECT_EQ(at<uint32_t>(c, 28), 0u); // no OEM table
    EXPECT_EQ(at<uint16_t>(c, 34), p.entries.size());
    EXPECT_EQ(at<uint32_t>(c, 36), layout::kLapicBase);
    EXPECT_EQ(at<uint16_t>(c, 40), 0); // extended table length
    EXPECT_EQ(c[42], 0);
    EXPECT_EQ(layout::kMpTable + 16 + c.size(), layout::kMpTable + mp_table_size(4));
}

class MpTableVcpus : public testing::TestWithParam<uint32_t> { };

TEST_P(MpTableVcpus, Entries)
{
    const uint32_t vcpus = GetParam();
    auto mem = make_mem();
    ASSERT_TRUE(build_mp_table(mem, vcpus).ok());
    Parsed p = parse(mem);
    EXPECT_EQ(sum_of(p.config), 0);
    // vcpus processors, ISA bus, I/O APIC, 15 ISA IRQs (no IRQ2), ExtINT + NMI.
    ASSERT_EQ(p.entries.size(), vcpus + 1 + 1 + 15 + 2);
    std::map<uint8_t, int> per_type;
    std::map<uint8_t, uint8_t> irq_to_pin;
    uint32_t next_cpu = 0;
    for (const auto& e : p.entries) {
        per_type[e.type]++;
        switch (e.type) {
        case 0:
            EXPECT_EQ(e.data[1], next_cpu) << "APIC id";
            EXPECT_EQ(e.data[2], 0x14) << "APIC version";
            EXPECT_EQ(e.data[3], next_cpu == 0 ? 0x03 : 0x01) << "enabled + BSP on cpu 0";
            EXPECT_EQ((at<uint32_t>(e.data, 4) >> 8) & 0xf, 6u) << "family";
            EXPECT_TRUE(at<uint32_t>(e.data, 8) & (1u << 9)) << "APIC feature";
            ++next_cpu;
            break;
        case 1:
            EXPECT_EQ(e.data[1], 0);
            EXPECT_EQ(std::string(reinterpret_cast<const char*>(e.data.data() + 2), 6), "ISA   ");
            break;
        case 2:
            EXPECT_EQ(e.data[1], vcpus) << "I/O APIC id";
            EXPECT_EQ(e.data[2], 0x11);
            EXPECT_EQ(e.data[3], 0x01);
            EXPECT_EQ(at<uint32_t>(e.data, 4), layout::kIoapicBase);
            break;
        case 3:
            EXPECT_EQ(e.data[1], 0) << "INT";
            EXPECT_EQ(at<uint16_t>(e.data, 2), 0) << "conforming";
            EXPECT_EQ(e.data[4], 0) << "ISA bus";
            EXPECT_EQ(e.data[6], vcpus) << "to the I/O APIC";
            EXPECT_FALSE(irq_to_pin.count(e.data[5]));
            irq_to_pin[e.data[5]] = e.data[7];
            break;
        case 4:
            EXPECT_EQ(e.data[6], 0xff) << "all local APICs";
            if (e.data[1] == 3) {
                EXPECT_EQ(e.data[7], 0) << "ExtINT on LINT0";
            } else if (e.data[1] == 1) {
                EXPECT_EQ(e.data[7], 1) << "NMI on LINT1";
            } else {
                ADD_FAILURE() << "local interrupt type " << int(e.data[1]);
            }
            break;
        }
    }
    EXPECT_EQ(per_type[0], static_cast<int>(vcpus));
    EXPECT_EQ(per_type[1], 1);
    EXPECT_EQ(per_type[2], 1);
    EXPECT_EQ(per_type[3], 15);
    EXPECT_EQ(per_type[4], 2);
    EXPECT_EQ(irq_to_pin.size(), 15u);
    EXPECT_EQ(irq_to_pin[0], 2) << "IRQ0 -> pin 2";
    EXPECT_FALSE(irq_to_pin.count(2));
    for (uint8_t irq = 1; irq < 16; ++irq) {
        if (irq != 2) {
            EXPECT_EQ(irq_to_pin[irq], irq);
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Counts, MpTableVcpus, testing::Values(1u, 2u, 8u, mp_table_max_vcpus()));

TEST(MpTable, LargestFitsBelow640K)
{
    uint32_t max = mp_table_max_vcpus();
    EXPECT_GE(max, 32u);
    EXPECT_LE(layout::kMpTable + mp_table_size(max), layout::kLowRamEnd);
    EXPECT_GT(layout::kMpTable + mp_table_size(max + 1), layout::kLowRamEnd);
    auto mem = make_mem();
    ASSERT_TRUE(build_mp_table(mem, max).ok());
}

TEST(MpTable, RefusesTooManyVcpus)
{
    auto mem = make_mem();
    auto r = build_mp_table(mem, mp_table_max_vcpus() + 1);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("vCPUs"), std::string::npos) << r.error().message();
    EXPECT_FALSE(build_mp_table(mem, 0).ok());
    EXPECT_FALSE(build_mp_table(mem, 1000).ok());
    // Nothing was written.
    EXPECT_EQ(mem.read_obj<uint32_t>(layout::kMpTable).value(), 0u);
}

TEST(MpTable, RebuildClearsOldTable)
{
    auto mem = make_mem();
    ASSERT_TRUE(build_mp_table(mem, mp_table_max_vcpus()).ok());
    ASSERT_TRUE(build_mp_table(mem, 1).ok());
    Bytes tail = read_bytes(mem, layout::kMpTable + mp_table_size(1), layout::kLowRamEnd - layout::kMpTable - mp_table_size(1));
    for (uint8_t b : tail)
        ASSERT_EQ(b, 0);
}
