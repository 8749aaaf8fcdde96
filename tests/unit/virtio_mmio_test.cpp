// The virtio-mmio transport at register level, driven as Linux's virtio_mmio driver does, with
// the virtio-rng device behind it (and a small recording device for what rng cannot show:
// configuration space and configuration changes).
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "devices/virtio/mmio.h"
#include "devices/virtio/rng.h"
#include "memory/guest_memory.h"
#include "virtio_test_support.h"

using namespace vessel;
using namespace vessel::virtio;
using namespace vessel::virtio_test;
namespace reg = vessel::virtio::mmio_reg;

namespace {

constexpr uint64_t kRam = 16 << 20;
constexpr uint64_t kRings = 0x1000;
constexpr uint64_t kData = 0x100000;

// Two queues, a 8-byte configuration space, and a hook into the transport's interrupt.
class RecordingDevice final : public VirtioDevice {
public:
    DeviceType type() const override { return DeviceType::Console; }
    std::string_view name() const override { return "recording"; }
    uint64_t features() const override { return 1ULL << 0 | 1ULL << 40; }
    std::vector<uint16_t> queue_max_sizes() const override { return { 4, 128 }; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override
    {
        for (size_t i = 0; i < data.size(); ++i)
            data[i] = offset + i < config.size() ? config[offset + i] : 0;
    }
    void write_config(uint64_t offset, std::span<const uint8_t> data) override
    {
        for (size_t i = 0; i < data.size() && offset + i < config.size(); ++i)
            config[offset + i] = data[i];
    }
    Result<void> activate(const ActivateContext& ctx) override
    {
        ++activations;
        this->ctx = ctx;
        return {};
    }
    void notify(uint16_t queue) override { notified.push_back(queue); }
    void reset() override
    {
        ++resets;
        ctx = {};
    }

    std::vector<uint8_t> config { 1, 2, 3, 4, 5, 6, 7, 8 };
    ActivateContext ctx;
    int activations { 0 };
    int resets { 0 };
    std::vector<uint16_t> notified;
};

template<typename Device>
class MmioFixture : public ::testing::Test {
protected:
    MmioFixture()
        : mem(GuestMemory::create(kRam).release_value())
        , device(std::make_shared<Device>())
        , transport(device, mem, irq.line())
        , driver(transport)
        , ring(mem, kRings, 8)
    {
    }

    // The whole probe: features, queue 0 on `ring`, DRIVER_OK.
    void bring_up(uint64_t features = kFVersion1)
    {
        ASSERT_TRUE(driver.negotiate(features));
        driver.setup_queue(0, ring);
        driver.driver_ok();
        ASSERT_EQ(driver.status() & kStatusNeedsReset, 0u);
    }

    IrqRecorder irq; // before the transport, which holds its line
    GuestMemory mem;
    std::shared_ptr<Device> device;
    MmioTransport transport;
    MmioDriver driver;
    SplitRing ring;
};

using VirtioMmio = MmioFixture<RngDevice>;
using VirtioMmioConfig = MmioFixture<RecordingDevice>;

constexpr uint32_t kStatusUpToFeaturesOk = kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk;

} // namespace

TEST_F(VirtioMmio, IdentifiesAsAVersion2RngDevice)
{
    EXPECT_EQ(driver.read(reg::kMagic), 0x74726976u); // "virt"
    EXPECT_EQ(driver.read(reg::kVersion), 2u);
    EXPECT_EQ(driver.read(reg::kDeviceId), 4u);
    EXPECT_EQ(driver.read(reg::kVendorId), kMmioVendor);
    EXPECT_EQ(driver.status(), 0u);
    EXPECT_EQ(driver.read(reg::kInterruptStatus), 0u);
    // No shared memory regions: length -1 (4.2.2).
    EXPECT_EQ(driver.read(reg::kShmLenLow), 0xffffffffu);
    EXPECT_EQ(driver.read(reg::kShmLenHigh), 0xffffffffu);
}

TEST_F(VirtioMmio, RegistersAreOnly32BitWide)
{
    uint8_t two[2] = { 0xaa, 0xaa };
    transport.read(reg::kMagic, two);
    EXPECT_EQ(two[0], 0);
    EXPECT_EQ(two[1], 0);
    uint32_t v = 0;
    transport.read(reg::kMagic + 1, std::span(reinterpret_cast<uint8_t*>(&v), 4)); // misaligned
    EXPECT_EQ(v, 0u);
    uint16_t status = kStatusAcknowledge;
    transport.write(reg::kStatus, std::span(reinterpret_cast<const uint8_t*>(&status), 2));
    EXPECT_EQ(driver.status(), 0u);
}

TEST_F(VirtioMmio, OffersVersion1IndirectAndEventIdx)
{
    EXPECT_EQ(driver.device_features(), kFVersion1 | kFRingIndirectDesc | kFRingEventIdx);
    driver.write(reg::kDeviceFeaturesSel, 2);
    EXPECT_EQ(driver.read(reg::kDeviceFeatures), 0u);
}

TEST_F(VirtioMmio, FeaturesOkNeedsVersion1)
{
    EXPECT_FALSE(driver.negotiate(kFRingEventIdx)); // a legacy driver
    EXPECT_EQ(driver.status(), kStatusAcknowledge | kStatusDriver);
}

TEST_F(VirtioMmio, FeaturesOkRefusesFeaturesNotOffered)
{
    EXPECT_FALSE(driver.negotiate(kFVersion1 | 1)); // rng offers no device features
    EXPECT_FALSE(driver.negotiate(kFVersion1 | (1ULL << 34)));
    EXPECT_TRUE(driver.negotiate(kFVersion1 | kFRingEventIdx));
    EXPECT_EQ(driver.status(), kStatusUpToFeaturesOk);
}

TEST_F(VirtioMmio, DriverFeaturesAreFrozenByFeaturesOk)
{
    ASSERT_TRUE(driver.negotiate(kFVersion1));
    driver.set_driver_features(kFVersion1 | kFRingIndirectDesc); // too late: ignored
    driver.setup_queue(0, ring);
    driver.driver_ok();
    ring.add_indirect(0x80000, { { kData, 16, true } });
    driver.notify(0);
    // Indirect was not negotiated, so the chain is malformed for the device.
    EXPECT_TRUE(driver.status() & kStatusNeedsReset);
}

TEST_F(VirtioMmio, QueueRegistersReadBackAndFreezeWhenReady)
{
    driver.write(reg::kQueueSel, 0);
    EXPECT_EQ(driver.read(reg::kQueueNumMax), 256u);
    EXPECT_EQ(driver.read(reg::kQueueReady), 0u);
    driver.write(reg::kQueueNum, 8);
    driver.write(reg::kQueueDescLow, 0x12345000);
    driver.write(reg::kQueueDescHigh, 0x1);
    driver.write(reg::kQueueDriverLow, 0x2000);
    driver.write(reg::kQueueDeviceLow, 0x3000);
    EXPECT_EQ(driver.read(reg::kQueueDescLow), 0x12345000u);
    EXPECT_EQ(driver.read(reg::kQueueDescHigh), 1u);
    EXPECT_EQ(driver.read(reg::kQueueDriverLow), 0x2000u);
    EXPECT_EQ(driver.read(reg::kQueueDeviceLow), 0x3000u);
    driver.write(reg::kQueueReady, 1);
    EXPECT_EQ(driver.read(reg::kQueueReady), 1u);
    driver.write(reg::kQueueDescLow, 0x5000); // the queue is live: ignored
    EXPECT_EQ(driver.read(reg::kQueueDescLow), 0x12345000u);
    // A queue the device does not have.
    driver.write(reg::kQueueSel, 1);
    EXPECT_EQ(driver.read(reg::kQueueNumMax), 0u);
    EXPECT_EQ(driver.read(reg::kQueueReady), 0u);
    driver.write(reg::kQueueReady, 1);
    EXPECT_EQ(driver.read(reg::kQueueReady), 0u);
}

TEST_F(VirtioMmio, NotifyFillsBuffersAndInterrupts)
{
    bring_up();
    EXPECT_EQ(driver.status(), kStatusUpToFeaturesOk | kStatusDriverOk);
    ASSERT_TRUE(mem.fill(kData, 0, 256).ok());
    ring.add_chain({ { kData, 64, true } });
    ring.add_chain({ { kData + 128, 16, true }, { kData + 192, 48, true } });
    driver.notify(0);
    ASSERT_EQ(ring.used_idx(), 2u);
    EXPECT_EQ(ring.used(0).id, 0u);
    EXPECT_EQ(ring.used(0).len, 64u);
    EXPECT_EQ(ring.used(1).id, 1u);
    EXPECT_EQ(ring.used(1).len, 64u);
    std::vector<uint8_t> got(64);
    ASSERT_TRUE(mem.read(kData, got).ok());
    EXPECT_TRUE(std::any_of(got.begin(), got.end(), [](uint8_t b) { return b != 0; })); // 2^-512 to fail
    EXPECT_EQ(device->bytes_served(), 128u);
    // One batch, one interrupt: status bit 0 and a single edge on the line, left low.
    EXPECT_EQ(driver.read(reg::kInterruptStatus), kInterruptUsedBuffer);
    EXPECT_EQ(irq.rising_edges, 1);
    EXPECT_FALSE(irq.level);
}

TEST_F(VirtioMmio, InterruptAckClearsOnlyTheAcknowledgedBits)
{
    bring_up();
    ring.add_chain({ { kData, 8, true } });
    driver.notify(0);
    ASSERT_EQ(driver.read(reg::kInterruptStatus), kInterruptUsedBuffer);
    driver.write(reg::kInterruptAck, kInterruptConfigChange);
    EXPECT_EQ(driver.read(reg::kInterruptStatus), kInterruptUsedBuffer);
    driver.write(reg::kInterruptAck, kInterruptUsedBuffer);
    EXPECT_EQ(driver.read(reg::kInterruptStatus), 0u);
}

TEST_F(VirtioMmio, EventIdxSuppressesInterrupts)
{
    bring_up(kFVersion1 | kFRingEventIdx);
    ring.set_used_event(5); // "interrupt me when entry 5 is used"
    ring.add_chain({ { kData, 8, true } });
    driver.notify(0);
    EXPECT_EQ(ring.used_idx(), 1u);
    EXPECT_EQ(irq.rising_edges, 0);
    EXPECT_EQ(driver.read(reg::kInterruptStatus), 0u);
    // The device asked to be notified of the next buffer.
    EXPECT_EQ(ring.avail_event(), 1u);
}

TEST_F(VirtioMmio, NotifyBeforeDriverOkOrForOtherQueuesIsIgnored)
{
    ASSERT_TRUE(driver.negotiate(kFVersion1));
    driver.setup_queue(0, ring);
    ring.add_chain({ { kData, 8, true } });
    driver.notify(0); // not live yet
    EXPECT_EQ(ring.used_idx(), 0u);
    driver.driver_ok();
    driver.notify(1);
    driver.notify(0xffffffff);
    EXPECT_EQ(ring.used_idx(), 0u);
    driver.notify(0);
    EXPECT_EQ(ring.used_idx(), 1u);
}

TEST_F(VirtioMmio, RingsOutsideRamMakeDriverOkFailWithNeedsReset)
{
    ASSERT_TRUE(driver.negotiate(kFVersion1));
    SplitRing bad(mem, 8, kRam - 64, 0x2000, 0x3000); // 128-byte descriptor table crosses the end of RAM
    driver.setup_queue(0, bad);
    driver.driver_ok();
    EXPECT_TRUE(driver.status() & kStatusNeedsReset);
    EXPECT_EQ(driver.read(reg::kInterruptStatus), kInterruptConfigChange);
    EXPECT_EQ(irq.rising_edges, 1);
    driver.notify(0); // the device is stopped
    EXPECT_EQ(device->bytes_served(), 0u);
}

TEST_F(VirtioMmio, DriverOkWithoutFeaturesOkNeedsReset)
{
    driver.add_status(kStatusAcknowledge | kStatusDriver);
    driver.setup_queue(0, ring);
    driver.driver_ok();
    EXPECT_TRUE(driver.status() & kStatusNeedsReset);
}

TEST_F(VirtioMmio, MalformedChainStopsTheDevice)
{
    bring_up();
    ring.write_desc(0, kData, 8, kDescNext, 1);
    ring.write_desc(1, kData, 8, kDescNext, 0); // a loop
    ring.publish(0);
    driver.notify(0);
    EXPECT_TRUE(driver.status() & kStatusNeedsReset);
    EXPECT_EQ(driver.read(reg::kInterruptStatus), kInterruptConfigChange);
    EXPECT_EQ(ring.used_idx(), 0u);
    // Later notifications are ignored until reset, and the interrupt is not repeated.
    ring.reset_descs(2);
    ring.add_chain({ { kData, 8, true } });
    driver.notify(0);
    EXPECT_EQ(ring.used_idx(), 0u);
    EXPECT_EQ(irq.rising_edges, 1);
}

TEST_F(VirtioMmio, DriverCannotClearStatusBitsOrSetNeedsReset)
{
    ASSERT_TRUE(driver.negotiate(kFVersion1));
    driver.write(reg::kStatus, kStatusAcknowledge);
    EXPECT_EQ(driver.status(), kStatusUpToFeaturesOk);
    driver.write(reg::kStatus, kStatusUpToFeaturesOk | kStatusNeedsReset);
    EXPECT_EQ(driver.status(), kStatusUpToFeaturesOk);
}

TEST_F(VirtioMmio, ResetClearsEverythingAndTheDeviceComesBack)
{
    bring_up(kFVersion1 | kFRingEventIdx);
    ring.add_chain({ { kData, 8, true } });
    driver.notify(0);
    ASSERT_EQ(ring.used_idx(), 1u);
    driver.write(reg::kStatus, 0);
    EXPECT_EQ(driver.status(), 0u);
    EXPECT_EQ(driver.read(reg::kInterruptStatus), 0u);
    driver.write(reg::kQueueSel, 0);
    EXPECT_EQ(driver.read(reg::kQueueReady), 0u);
    EXPECT_EQ(driver.read(reg::kQueueDescLow), 0u);
    EXPECT_EQ(driver.read(reg::kQueueDriverLow), 0u);
    EXPECT_EQ(driver.read(reg::kQueueDeviceLow), 0u);
    ring.add_chain({ { kData, 8, true } });
    driver.notify(0); // reset: nothing runs
    EXPECT_EQ(ring.used_idx(), 1u);

    // A fresh probe on fresh rings starts from index 0 again.
    SplitRing ring2(mem, 0x8000, 4);
    ASSERT_TRUE(driver.negotiate(kFVersion1));
    driver.setup_queue(0, ring2);
    driver.driver_ok();
    ring2.add_chain({ { kData, 8, true } });
    driver.notify(0);
    EXPECT_EQ(ring2.used_idx(), 1u);
    EXPECT_EQ(ring2.used(0).len, 8u);
}

TEST_F(VirtioMmio, ResetAfterNeedsResetRecovers)
{
    bring_up();
    ring.write_desc(0, kRam, 8, kDescWrite, 0);
    ring.publish(0);
    driver.notify(0);
    ASSERT_TRUE(driver.status() & kStatusNeedsReset);
    driver.write(reg::kStatus, 0);
    EXPECT_EQ(driver.status(), 0u);
    SplitRing ring2(mem, 0x8000, 8);
    ASSERT_TRUE(driver.negotiate(kFVersion1));
    driver.setup_queue(0, ring2);
    driver.driver_ok();
    EXPECT_EQ(driver.status() & kStatusNeedsReset, 0u);
    ring2.add_chain({ { kData, 8, true } });
    driver.notify(0);
    EXPECT_EQ(ring2.used_idx(), 1u);
}

TEST_F(VirtioMmio, RngConfigSpaceIsEmpty)
{
    uint32_t v = 0xdeadbeef;
    transport.read(reg::kConfig, std::span(reinterpret_cast<uint8_t*>(&v), 4));
    EXPECT_EQ(v, 0u);
}

TEST_F(VirtioMmio, ShutdownStopsTheDevice)
{
    bring_up();
    transport.shutdown();
    ring.add_chain({ { kData, 8, true } });
    driver.notify(0);
    EXPECT_EQ(ring.used_idx(), 0u);
    driver.write(reg::kStatus, 0); // ignored too
    EXPECT_NE(driver.status(), 0u);
}

// --- configuration space and configuration changes (recording device) -------------------------

TEST_F(VirtioMmioConfig, ConfigSpaceAccessesAnyWidthAndOffset)
{
    uint8_t b = 0;
    transport.read(reg::kConfig + 2, std::span(&b, 1));
    EXPECT_EQ(b, 3);
    uint16_t w = 0;
    transport.read(reg::kConfig + 6, std::span(reinterpret_cast<uint8_t*>(&w), 2));
    EXPECT_EQ(w, 0x0807);
    uint32_t v = 0xaabbccdd;
    transport.write(reg::kConfig + 4, std::span(reinterpret_cast<const uint8_t*>(&v), 4));
    EXPECT_EQ(device->config[4], 0xdd);
    EXPECT_EQ(device->config[7], 0xaa);
    uint64_t q = 0;
    transport.read(reg::kConfig + 4, std::span(reinterpret_cast<uint8_t*>(&q), 8)); // past the end: zeros
    EXPECT_EQ(q, 0xaabbccddULL);
}

TEST_F(VirtioMmioConfig, DeviceFeaturesIncludeTheDevicesOwnInBothHalves)
{
    EXPECT_EQ(driver.device_features(), (1ULL << 0) | (1ULL << 40) | kFVersion1 | kFRingIndirectDesc | kFRingEventIdx);
    EXPECT_TRUE(driver.negotiate(kFVersion1 | (1ULL << 40)));
}

TEST_F(VirtioMmioConfig, ActivationHandsTheDeviceItsQueuesAndFeatures)
{
    ASSERT_TRUE(driver.negotiate(kFVersion1 | 1));
    driver.write(reg::kQueueSel, 1);
    EXPECT_EQ(driver.read(reg::kQueueNumMax), 128u);
    SplitRing ring1(mem, 0x8000, 64);
    driver.setup_queue(1, ring1); // queue 0 stays unused
    driver.driver_ok();
    ASSERT_EQ(device->activations, 1);
    EXPECT_EQ(device->ctx.features, kFVersion1 | 1);
    EXPECT_EQ(device->ctx.memory, &mem);
    ASSERT_EQ(device->ctx.queues.size(), 2u);
    EXPECT_FALSE(device->ctx.queues[0].active());
    EXPECT_TRUE(device->ctx.queues[1].active());
    EXPECT_EQ(device->ctx.queues[1].size(), 64u);
    driver.notify(1);
    driver.notify(0); // not ready: not passed on
    EXPECT_EQ(device->notified, std::vector<uint16_t> { 1 });
    driver.write(reg::kStatus, 0);
    EXPECT_EQ(device->resets, 1);
}

TEST_F(VirtioMmioConfig, QueueSizeAboveTheMaximumFailsActivation)
{
    ASSERT_TRUE(driver.negotiate(kFVersion1));
    SplitRing big(mem, 0x8000, 8);
    driver.setup_queue(0, big); // queue 0's maximum is 4
    driver.driver_ok();
    EXPECT_TRUE(driver.status() & kStatusNeedsReset);
    EXPECT_EQ(device->activations, 0);
}

TEST_F(VirtioMmioConfig, ConfigChangeBumpsTheGenerationAndInterrupts)
{
    ASSERT_TRUE(driver.negotiate(kFVersion1));
    driver.setup_queue(1, ring);
    driver.driver_ok();
    ASSERT_NE(device->ctx.interrupt, nullptr);
    uint32_t generation = driver.read(reg::kConfigGeneration);
    EXPECT_EQ(driver.read(reg::kConfigGeneration), generation); // stable while nothing changes
    device->ctx.interrupt->signal_config();
    EXPECT_NE(driver.read(reg::kConfigGeneration), generation);
    EXPECT_EQ(driver.read(reg::kInterruptStatus), kInterruptConfigChange);
    EXPECT_EQ(irq.rising_edges, 1);
    device->ctx.interrupt->signal_queue(1);
    EXPECT_EQ(driver.read(reg::kInterruptStatus), kInterruptConfigChange | kInterruptUsedBuffer);
    EXPECT_EQ(irq.rising_edges, 2);
    EXPECT_FALSE(irq.level);
}
