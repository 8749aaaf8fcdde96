// The KVM engine's paravirtual fast paths: an ioeventfd takes guest MMIO writes inside KVM (no
// exit to the VMM), an irqfd is accepted for a GSI of the in-kernel IOAPIC.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engine/kvm/kvm_engine.h"
#include "engine/probe.h"
#include "vmm/vm.h"

using namespace vessel;

namespace {

#define SKIP_UNLESS_KVM()                                                           \
    do {                                                                            \
        auto p = probe_host();                                                      \
        if (!p.kvm_device)                                                          \
            GTEST_SKIP() << "KVM is not usable here: " << p.reason;                 \
    } while (0)

TEST(KvmFastPath, IoeventfdTakesMmioWritesWithoutExits)
{
    SKIP_UNLESS_KVM();
    VmConfig config;
    config.kernel = std::string(VESSEL_GUEST_DIR) + "/mmio-loop.elf";
    config.cmdline = "iterations=1000";
    config.mem_bytes = 64 << 20;
    config.engine = EngineKind::Kvm;
    KvmEngine* kvm = nullptr;
    auto vm = Vm::create(config, [&]() -> Result<std::unique_ptr<Engine>> {
        auto engine = TRY(KvmEngine::create(EngineConfig { 1 }));
        kvm = engine.get();
        return std::unique_ptr<Engine>(std::move(engine));
    });
    ASSERT_TRUE(vm.ok()) << vm.error().message();
    int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ASSERT_GE(fd, 0);
    auto added = kvm->add_mmio_notifier(0xc0000000, 4, std::nullopt, fd);
    ASSERT_TRUE(added.ok()) << added.error().message();
    if (!added.value())
        GTEST_SKIP() << "KVM here has no KVM_CAP_IOEVENTFD";
    auto exit = vm.value()->run();
    ASSERT_TRUE(exit.ok()) << exit.error().message();
    EXPECT_NE(exit.value().stop.reason, StopReason::Error) << exit.value().message;
    uint64_t count = 0;
    ASSERT_EQ(::read(fd, &count, sizeof(count)), static_cast<ssize_t>(sizeof(count)));
    EXPECT_EQ(count, 1000u) << "every store to the ioeventfd address signals the eventfd";
    ::close(fd);
}

TEST(KvmFastPath, IrqfdIsAcceptedForIoapicPins)
{
    SKIP_UNLESS_KVM();
    auto engine = KvmEngine::create(EngineConfig { 1 });
    ASSERT_TRUE(engine.ok()) << engine.error().message();
    int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ASSERT_GE(fd, 0);
    auto added = engine.value()->add_irq_notifier(16, fd);
    ASSERT_TRUE(added.ok()) << added.error().message();
    EXPECT_TRUE(added.value());
    ::close(fd);
}

} // namespace
