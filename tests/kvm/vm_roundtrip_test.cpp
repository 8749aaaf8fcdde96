// Whole-VM state round trips: while a test guest runs, pause it again and again, read every
// vCPU's state, scribble over it, write the saved state back and resume. The guest checks its
// own results and reports PASS through the debug-exit port only if nothing was disturbed.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "engine/kvm/kvm_engine.h"
#include "engine/probe.h"
#include "vmm/vm.h"

using namespace vessel;

namespace {

struct RoundTripResult {
    VmExitInfo exit;
    int round_trips { 0 };
};

RoundTripResult run_with_round_trips(const std::string& guest, uint32_t cpus, std::chrono::microseconds period)
{
    VmConfig config;
    config.kernel = std::string(VESSEL_GUEST_DIR) + "/" + guest;
    config.cpus = cpus;
    config.mem_bytes = 64 << 20;
    config.engine = EngineKind::Kvm;
    auto vm = Vm::create(config, [&]() -> Result<std::unique_ptr<Engine>> {
        auto engine = TRY(KvmEngine::create(EngineConfig { cpus }));
        return std::unique_ptr<Engine>(std::move(engine));
    });
    EXPECT_TRUE(vm.ok()) << vm.error().message();
    RoundTripResult out;
    if (!vm.ok())
        return out;
    Vm& machine = *vm.value();

    std::atomic<bool> done { false };
    std::thread runner([&] {
        auto r = machine.run();
        EXPECT_TRUE(r.ok());
        if (r.ok())
            out.exit = r.value();
        done = true;
    });
    while (!done.load()) {
        std::this_thread::sleep_for(period);
        if (done.load())
            break;
        auto paused = machine.pause();
        EXPECT_TRUE(paused.ok() || machine.stopping()) << paused.error().message();
        if (!paused.ok())
            break;
        for (auto& vcpu : machine.vcpus()) {
            auto state = vcpu->get_state();
            EXPECT_TRUE(state.ok()) << state.error().message();
            if (!state.ok())
                continue;
            CpuState scribble = state.value();
            scribble.gpr.fill(0x5a5a5a5a5a5a5a5aULL);
            scribble.xsave[160] ^= 0xff;
            EXPECT_TRUE(vcpu->set_state(scribble).ok());
            auto set = vcpu->set_state(state.value());
            EXPECT_TRUE(set.ok()) << set.error().message();
        }
        ++out.round_trips;
        auto resumed = machine.resume();
        EXPECT_TRUE(resumed.ok()) << resumed.error().message();
    }
    runner.join();
    return out;
}

#define REQUIRE_KVM()                                                        \
    do {                                                                     \
        HostProbe p = probe_host();                                          \
        if (!p.kvm_device)                                                   \
            GTEST_SKIP() << "KVM is not usable here: " << p.reason;         \
    } while (0)

} // namespace

TEST(VmRoundTrip, Cpl3ComputeSurvivesRepeatedStateRoundTrips)
{
    REQUIRE_KVM();
    auto r = run_with_round_trips("cpl3-compute.elf", 1, std::chrono::microseconds(3000));
    EXPECT_EQ(r.exit.stop.reason, StopReason::DebugExit) << r.exit.message;
    EXPECT_EQ(r.exit.stop.exit_status, 33) << "the guest's own check failed";
    EXPECT_GE(r.round_trips, 1) << "the guest finished before any round trip";
    std::printf("round trips during the run: %d\n", r.round_trips);
}

TEST(VmRoundTrip, InterruptsSurviveRepeatedStateRoundTrips)
{
    REQUIRE_KVM();
    auto r = run_with_round_trips("interrupts.elf", 1, std::chrono::microseconds(700));
    EXPECT_EQ(r.exit.stop.reason, StopReason::DebugExit) << r.exit.message;
    EXPECT_EQ(r.exit.stop.exit_status, 33) << "the guest's own check failed";
    EXPECT_GE(r.round_trips, 1) << "the guest finished before any round trip";
    std::printf("round trips during the run: %d\n", r.round_trips);
}

TEST(VmRoundTrip, SmpSurvivesRepeatedStateRoundTrips)
{
    REQUIRE_KVM();
    auto r = run_with_round_trips("smp.elf", 4, std::chrono::microseconds(500));
    EXPECT_EQ(r.exit.stop.reason, StopReason::DebugExit) << r.exit.message;
    EXPECT_EQ(r.exit.stop.exit_status, 33) << "the guest's own check failed";
    std::printf("round trips during the run: %d\n", r.round_trips);
}
