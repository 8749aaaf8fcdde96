// The snapshot state file container (snapshot/format.h), the JSON forms of the state
// (snapshot/serialize.h) and the memory file (snapshot/memory_file.h).
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>

#include <gtest/gtest.h>
#include <xxhash.h>

#include "memory/dirty_bitmap.h"
#include "memory/guest_memory.h"
#include "snapshot/format.h"
#include "snapshot/memory_file.h"
#include "snapshot/serialize.h"

using namespace vessel;
using nlohmann::json;

namespace {

std::string temp_dir()
{
    char tmpl[] = "/tmp/vessel-snapfmt-XXXXXX";
    return ::mkdtemp(tmpl);
}

// A file around `body` with a valid header and checksum (what a hostile writer can make).
std::vector<uint8_t> wrap(const std::vector<uint8_t>& body)
{
    std::vector<uint8_t> out(snapshot::kHeaderBytes);
    std::memcpy(out.data(), snapshot::kStateMagic, 8);
    out[8] = snapshot::kFormatMajor;
    out[12] = snapshot::kFormatMinor;
    for (int i = 0; i < 8; ++i)
        out[16 + i] = static_cast<uint8_t>(body.size() >> (8 * i));
    out.insert(out.end(), body.begin(), body.end());
    uint64_t sum = XXH64(out.data(), out.size(), 0);
    for (int i = 0; i < 8; ++i)
        out.push_back(static_cast<uint8_t>(sum >> (8 * i)));
    return out;
}

std::string decode_error(const std::vector<uint8_t>& bytes)
{
    auto r = snapshot::decode_state(bytes.data(), bytes.size(), "t.state");
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : r.error().message();
}

} // namespace

TEST(SnapshotFormat, RoundTripKeepsEveryValue)
{
    json doc = { { "a", 1 }, { "b", json::binary({ 1, 2, 3, 0 }) }, { "c", { { "d", "text" } } } };
    auto bytes = snapshot::encode_state(doc);
    auto back = snapshot::decode_state(bytes.data(), bytes.size(), "t");
    ASSERT_TRUE(back.ok()) << back.error().message();
    EXPECT_EQ(back.value(), doc);
}

TEST(SnapshotFormat, EveryFlippedBitIsRefusedWithItsReason)
{
    json doc = { { "vcpus", json::array({ { { "rip", 0x1000 } } }) },
        { "blob", json::binary(std::vector<uint8_t>(100, 7)) } };
    auto good = snapshot::encode_state(doc);
    for (size_t byte = 0; byte < good.size(); ++byte) {
        for (int bit = 0; bit < 8; ++bit) {
            auto bad = good;
            bad[byte] ^= uint8_t(1 << bit);
            std::string why = decode_error(bad);
            ASSERT_FALSE(why.empty()) << "byte " << byte << " bit " << bit;
            EXPECT_NE(why.find("t.state"), std::string::npos) << why;
            if (byte < 8) {
                EXPECT_NE(why.find("wrong magic"), std::string::npos) << why;
            } else if (byte >= 24) {
                EXPECT_NE(why.find("checksum mismatch"), std::string::npos) << why;
            }
        }
    }
}

TEST(SnapshotFormat, TruncationAndNewerVersionsAreRefused)
{
    auto good = snapshot::encode_state(json { { "x", 1 } });
    for (size_t n : { size_t(0), size_t(7), size_t(24), good.size() - 1 })
        EXPECT_FALSE(decode_error(std::vector<uint8_t>(good.begin(), good.begin() + long(n))).empty());
    auto newer = good;
    newer[12] = 1; // minor 1
    EXPECT_NE(decode_error(newer).find("format version 1.1 is newer"), std::string::npos);
    newer = good;
    newer[8] = 2; // major 2
    EXPECT_NE(decode_error(newer).find("format version 2.0 is newer"), std::string::npos);
    auto older = good;
    older[8] = 0;
    EXPECT_NE(decode_error(older).find("older"), std::string::npos);
}

TEST(SnapshotFormat, DeepNestingAndIndefiniteLengthsAreRefusedBeforeParsing)
{
    // 100 nested one-element arrays (0x81) around 0, with a valid checksum.
    std::vector<uint8_t> deep(100, 0x81);
    deep.push_back(0x00);
    EXPECT_NE(decode_error(wrap(deep)).find("nests deeper"), std::string::npos);
    // Indefinite-length text chunks nested in each other: nlohmann would recurse per chunk.
    std::vector<uint8_t> chunks(10000, 0x7f);
    EXPECT_NE(decode_error(wrap(chunks)).find("indefinite-length"), std::string::npos);
    // A map claiming more entries than there are bytes.
    EXPECT_NE(
        decode_error(wrap({ 0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff })).find("CBOR"), std::string::npos);
    // A document followed by junk.
    EXPECT_NE(decode_error(wrap({ 0xa0, 0x00 })).find("follow"), std::string::npos);
}

TEST(SnapshotFormat, StateFilesAreWrittenAtomicallyAndReadBack)
{
    std::string dir = temp_dir();
    std::string path = dir + "/vm.state";
    json doc = { { "k", "v" } };
    ASSERT_TRUE(snapshot::write_state_file(path, doc).ok());
    auto back = snapshot::read_state_file(path);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(back.value(), doc);
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1); // no temporary left
    auto missing = snapshot::read_state_file(dir + "/nope");
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.error().message().find("cannot open"), std::string::npos);
    std::filesystem::remove_all(dir);
}

TEST(SnapshotSerialize, CpuStateRoundTripsExactly)
{
    std::mt19937_64 rng(42);
    CpuState s;
    for (auto& r : s.gpr)
        r = rng();
    s.rip = rng();
    s.rflags = 0x246;
    s.cs = SegmentReg { 0x1234, 0xffffffff, 0x10, 11, 1, 0, 0, 1, 1, 1, 0, 0 };
    s.gdt = { 0xfffff000, 0x7f };
    s.cr0 = 0x80050033;
    s.cr3 = rng();
    s.efer = 0xd01;
    s.msrs.lstar = rng();
    s.msrs.kvm_system_time = rng();
    s.tsc = rng();
    for (auto& b : s.xsave)
        b = static_cast<uint8_t>(rng());
    for (auto& b : s.lapic)
        b = static_cast<uint8_t>(rng());
    s.events.nmi_pending = 1;
    s.mp_state = MpState::Halted;
    json j = s;
    // Through CBOR, as on disk.
    auto back = json::from_cbor(json::to_cbor(j)).get<CpuState>();
    EXPECT_TRUE(back == s);
}

TEST(SnapshotSerialize, ConfigAndMachineRoundTrip)
{
    VmConfig c;
    c.mem_bytes = 512ULL << 20;
    c.cpus = 2;
    c.engine = EngineKind::Soft;
    c.disks.push_back(DiskConfig { "/d.img", true, "ser", "rootfs", true, "uuid", "Writeback", "Sync",
        RateLimiterConfig { TokenBucketConfig { 1, 2, 3 }, std::nullopt } });
    c.nets.push_back(
        NetConfig { "tap0", std::array<uint8_t, 6> { 6, 0, 1, 2, 3, 4 }, "eth0", std::nullopt, std::nullopt });
    c.vsock = VsockConfig { 7, "/v.sock" };
    c.track_dirty_pages = true;
    auto back = json::from_cbor(json::to_cbor(json(c))).get<VmConfig>();
    EXPECT_EQ(json(back), json(c));
    EXPECT_EQ(back.disks[0].rate_limiter, c.disks[0].rate_limiter);
    EXPECT_EQ(back.nets[0].mac, c.nets[0].mac);

    MachineState m;
    m.ioapic.redirection[3] = 0x1234567890;
    m.pic[1].imr = 0xfb;
    m.pit.channels[0].count_load_time_ns = -5;
    m.guest_time_ns = 123456789;
    m.tsc_khz = 2100000;
    EXPECT_TRUE(json::from_cbor(json::to_cbor(json(m))).get<MachineState>() == m);
}

TEST(SnapshotSerialize, WrongTypesAndBadEnumsAreErrorsNamingTheField)
{
    json j = { { "vcpus", json::array({ { { "rip", "not a number" } } }) } };
    auto r = snapshot::read_as<std::vector<CpuState>>(j, "vcpus", "snapshot");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("vcpus"), std::string::npos);
    json bad_enum = { { "config", { { "engine", 9 } } } };
    auto c = snapshot::read_as<VmConfig>(bad_enum, "config", "snapshot");
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.error().message().find("engine"), std::string::npos);
    json short_blob = { { "x", { { "xsave", json::binary({ 1, 2 }) } } } };
    EXPECT_FALSE(snapshot::read_as<CpuState>(short_blob, "x", "snapshot").ok());
    EXPECT_FALSE(snapshot::read_as<CpuState>(json { { "y", 1 } }, "x", "snapshot").ok()); // missing
}

TEST(SnapshotMemoryFile, FullIsSparseDiffHoldsDirtyPagesAndMergeEqualsFull)
{
    std::string dir = temp_dir();
    auto mem = GuestMemory::create(32ULL << 20);
    ASSERT_TRUE(mem.ok());
    std::vector<uint8_t> page(4096, 0xab);
    for (uint64_t gpa : { 0x0ULL, 0x5000ULL, 0x100000ULL, 0x1fff000ULL })
        ASSERT_TRUE(mem->write(gpa, page).ok());
    ASSERT_TRUE(mem->fill(0x200000, 0, 4096).ok()); // touched but zero: stays a hole
    auto full = snapshot::write_full_memory(*mem, dir + "/base.mem");
    ASSERT_TRUE(full.ok()) << full.error().message();
    EXPECT_EQ(full->pages_written, 4u);
    struct stat st { };
    ASSERT_EQ(::stat((dir + "/base.mem").c_str(), &st), 0);
    EXPECT_EQ(uint64_t(st.st_size), 32ULL << 20);
    EXPECT_LE(uint64_t(st.st_blocks) * 512, 64u * 1024); // sparse: 16 KiB of data (+ fs overhead)

    // Changes after the base: one page rewritten, one zeroed, one new; the bitmap says which.
    DirtyBitmap dirty(mem->end_address());
    std::vector<uint8_t> other(4096, 0x5a);
    ASSERT_TRUE(mem->write(0x5000, other).ok());
    ASSERT_TRUE(mem->fill(0x100000, 0, 4096).ok());
    ASSERT_TRUE(mem->write(0x300000, other).ok());
    for (uint64_t gpa : { 0x5000ULL, 0x100000ULL, 0x300000ULL })
        dirty.mark(gpa, 4096);
    auto diff = snapshot::write_diff_memory(*mem, dirty.take(), dir + "/diff.mem");
    ASSERT_TRUE(diff.ok());
    EXPECT_EQ(diff->pages_written, 3u); // the zeroed page too: in a diff a hole means "unchanged"
    auto ref = snapshot::write_full_memory(*mem, dir + "/ref.mem");
    ASSERT_TRUE(ref.ok());
    auto merged = snapshot::merge_memory_files(dir + "/base.mem", { dir + "/diff.mem" });
    ASSERT_TRUE(merged.ok()) << merged.error().message();

    // The merged base maps to exactly the guest's memory now.
    auto mapped = GuestMemory::map_file(dir + "/base.mem", 32ULL << 20);
    ASSERT_TRUE(mapped.ok()) << mapped.error().message();
    EXPECT_EQ(std::memcmp(mapped->host_ptr(0, 32ULL << 20), mem->host_ptr(0, 32ULL << 20), 32ULL << 20), 0);
    // Writes to the private mapping never reach the file, and a full snapshot of it sees them.
    ASSERT_TRUE(mapped->write(0x400000, other).ok());
    auto again = snapshot::write_full_memory(*mapped, dir + "/again.mem");
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->pages_written, 5u);
    auto remapped = GuestMemory::map_file(dir + "/base.mem", 32ULL << 20);
    ASSERT_TRUE(remapped.ok());
    EXPECT_EQ(*remapped->host_ptr(0x400000, 1), 0);

    // Wrong sizes are refused.
    auto wrong = GuestMemory::map_file(dir + "/base.mem", 64ULL << 20);
    ASSERT_FALSE(wrong.ok());
    EXPECT_NE(wrong.error().message().find("holds"), std::string::npos);
    ASSERT_EQ(::truncate((dir + "/diff.mem").c_str(), 16 << 20), 0);
    EXPECT_FALSE(snapshot::merge_memory_files(dir + "/base.mem", { dir + "/diff.mem" }).ok());
    std::filesystem::remove_all(dir);
}
