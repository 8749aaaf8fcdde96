// Vm::snapshot() and Vm::restore(): the state file's document (snapshot/format.h holds its
// container) and the memory file (snapshot/memory_file.h).
//
// The document, version 1.0:
//   vessel        {"version", "created_unix_ns"}         who wrote it (informational)
//   engine        "soft" | "kvm"                         where it was taken
//   config        VmConfig                               what to rebuild (devices, RAM size)
//   memory        {"type": "Full"|"Diff", "size"}        the memory file that goes with it
//   cpuid         [[CpuidEntry]] per vCPU                what the guest saw
//   vcpus         [CpuState]
//   machine       MachineState                           irqchips, PIT, guest time, TSC rate
//   devices       {"serial", "i8042", "rtc", "acpi_pm", "post", "virtio": [{"type", "state"}]}
#include <chrono>

#include "base/log.h"
#include "devices/acpi_pm.h"
#include "devices/i8042.h"
#include "devices/post_port.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "devices/virtio/mmio.h"
#include "memory/dirty_bitmap.h"
#include "memory/uffd_memory.h"
#include "snapshot/format.h"
#include "snapshot/memory_file.h"
#include "snapshot/serialize.h"
#include "vmm/vm.h"

namespace vessel {

using nlohmann::json;

namespace {

constexpr const char* kVersion = "0.1.0";

struct FeatureBit {
    uint32_t leaf;
    uint32_t subleaf;
    char reg; // 'a' 'b' 'c' 'd'
    uint8_t bit;
    const char* name;
};

// The feature flags a guest's code may use without asking again (kernels and C libraries probe
// once, at boot): a restore onto an engine that lacks one is refused.
constexpr FeatureBit kFeatures[] = {
    { 1, 0, 'd', 0, "fpu" },
    { 1, 0, 'd', 4, "tsc" },
    { 1, 0, 'd', 5, "msr" },
    { 1, 0, 'd', 6, "pae" },
    { 1, 0, 'd', 8, "cx8" },
    { 1, 0, 'd', 9, "apic" },
    { 1, 0, 'd', 11, "sep" },
    { 1, 0, 'd', 13, "pge" },
    { 1, 0, 'd', 15, "cmov" },
    { 1, 0, 'd', 16, "pat" },
    { 1, 0, 'd', 19, "clflush" },
    { 1, 0, 'd', 23, "mmx" },
    { 1, 0, 'd', 24, "fxsr" },
    { 1, 0, 'd', 25, "sse" },
    { 1, 0, 'd', 26, "sse2" },
    { 1, 0, 'c', 0, "sse3" },
    { 1, 0, 'c', 1, "pclmulqdq" },
    { 1, 0, 'c', 9, "ssse3" },
    { 1, 0, 'c', 12, "fma" },
    { 1, 0, 'c', 13, "cx16" },
    { 1, 0, 'c', 17, "pcid" },
    { 1, 0, 'c', 19, "sse4_1" },
    { 1, 0, 'c', 20, "sse4_2" },
    { 1, 0, 'c', 21, "x2apic" },
    { 1, 0, 'c', 22, "movbe" },
    { 1, 0, 'c', 23, "popcnt" },
    { 1, 0, 'c', 24, "tsc_deadline_timer" },
    { 1, 0, 'c', 25, "aes" },
    { 1, 0, 'c', 26, "xsave" },
    { 1, 0, 'c', 28, "avx" },
    { 1, 0, 'c', 29, "f16c" },
    { 1, 0, 'c', 30, "rdrand" },
    { 7, 0, 'b', 0, "fsgsbase" },
    { 7, 0, 'b', 3, "bmi1" },
    { 7, 0, 'b', 5, "avx2" },
    { 7, 0, 'b', 7, "smep" },
    { 7, 0, 'b', 8, "bmi2" },
    { 7, 0, 'b', 9, "erms" },
    { 7, 0, 'b', 10, "invpcid" },
    { 7, 0, 'b', 16, "avx512f" },
    { 7, 0, 'b', 18, "rdseed" },
    { 7, 0, 'b', 19, "adx" },
    { 7, 0, 'b', 20, "smap" },
    { 7, 0, 'b', 29, "sha_ni" },
    { 7, 0, 'c', 3, "pku" },
    { 7, 0, 'c', 22, "rdpid" },
    { 7, 0, 'd', 4, "fsrm" },
    { 0xd, 1, 'a', 0, "xsaveopt" },
    { 0xd, 1, 'a', 1, "xsavec" },
    { 0xd, 1, 'a', 3, "xsaves" },
    { 0x80000001, 0, 'c', 0, "lahf_lm" },
    { 0x80000001, 0, 'c', 5, "abm" },
    { 0x80000001, 0, 'c', 8, "3dnowprefetch" },
    { 0x80000001, 0, 'd', 11, "syscall" },
    { 0x80000001, 0, 'd', 20, "nx" },
    { 0x80000001, 0, 'd', 26, "pdpe1gb" },
    { 0x80000001, 0, 'd', 27, "rdtscp" },
    { 0x80000001, 0, 'd', 29, "lm" },
};

const CpuidEntry* find_leaf(const CpuidTable& table, uint32_t leaf, uint32_t subleaf)
{
    for (const auto& e : table)
        if (e.function == leaf && (!e.significant_index || e.index == subleaf))
            return &e;
    return nullptr;
}

uint32_t reg_of(const CpuidEntry& e, char reg)
{
    switch (reg) {
    case 'a': return e.eax;
    case 'b': return e.ebx;
    case 'c': return e.ecx;
    default: return e.edx;
    }
}

// The features the snapshot's guest saw that `target` does not offer.
std::vector<std::string> missing_features(const CpuidTable& saw, const CpuidTable& target)
{
    std::vector<std::string> missing;
    for (const auto& f : kFeatures) {
        const CpuidEntry* had = find_leaf(saw, f.leaf, f.subleaf);
        if (!had || !(reg_of(*had, f.reg) >> f.bit & 1))
            continue;
        const CpuidEntry* has = find_leaf(target, f.leaf, f.subleaf);
        if (!has || !(reg_of(*has, f.reg) >> f.bit & 1))
            missing.emplace_back(f.name);
    }
    return missing;
}

Result<json> section(const json& doc, const char* key, const std::string& origin)
{
    if (!doc.contains(key))
        return make_error("snapshot '{}': the state has no \"{}\"", origin, key);
    return doc.at(key);
}

template<typename T>
Result<T> decode(const json& j, const std::string& what)
{
    try {
        return j.get<T>();
    } catch (const std::exception& e) {
        return make_error("{}: {}", what, e.what());
    }
}

uint64_t unix_ns()
{
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
}

} // namespace

Result<Vm::SnapshotInfo> Vm::snapshot(const SnapshotOptions& options)
{
    if (!m_paused_vm)
        return make_error("the VM must be paused");
    if (options.diff && !m_dirty)
        return make_error("a Diff snapshot needs dirty page tracking: set track_dirty_pages in /machine-config "
                          "before the start, or when loading the snapshot this VM came from");
    auto t0 = std::chrono::steady_clock::now();

    json doc = json::object();
    doc["vessel"] = { { "version", kVersion }, { "created_unix_ns", unix_ns() } };
    doc["engine"] = std::string(m_engine->name());
    doc["config"] = m_config;
    json cpuid = json::array(), vcpus = json::array();
    for (uint32_t i = 0; i < m_vcpus.size(); ++i) {
        cpuid.push_back(TRY_CTX(m_engine->cpuid_table(i), "reading the CPUID table"));
        vcpus.push_back(TRY_CTX(m_vcpus[i]->get_state(), fmt::format("reading vCPU {}", i)));
    }
    doc["cpuid"] = std::move(cpuid);
    doc["vcpus"] = std::move(vcpus);
    doc["machine"] = TRY_CTX(m_engine->save_machine(), "saving the interrupt controllers and timers");
    json devices = json::object();
    devices["serial"] = m_serial->save();
    devices["i8042"] = m_i8042->save();
    devices["rtc"] = m_rtc->save();
    devices["acpi_pm"] = m_acpi_pm->save();
    devices["post"] = m_post->save();
    json virtio = json::array();
    for (const auto& t : m_virtio)
        virtio.push_back({ { "type", static_cast<uint32_t>(t->device().type()) }, { "state", t->save_state() } });
    devices["virtio"] = std::move(virtio);
    doc["devices"] = std::move(devices);

    // Memory: the dirty log restarts at every snapshot, so the next diff holds what changes after
    // this one, whatever its type.
    std::vector<uint64_t> dirty;
    if (m_dirty) {
        TRY_CTX(m_engine->collect_dirty(*m_dirty), "collecting dirty pages");
        dirty = m_dirty->take();
    }
    doc["memory"] = { { "type", options.diff ? "Diff" : "Full" }, { "size", m_memory.size() } };
    auto mem = options.diff ? snapshot::write_diff_memory(m_memory, dirty, options.mem_path, options.progress)
                            : snapshot::write_full_memory(m_memory, options.mem_path, options.progress);
    if (!mem.ok()) {
        // Nothing was saved: the pages stay dirty for the next attempt.
        for (size_t w = 0; w < dirty.size(); ++w)
            m_dirty->mark_word(w, dirty[w]);
        return mem.error();
    }
    TRY(snapshot::write_state_file(options.state_path, doc));

    SnapshotInfo info;
    info.mem_pages = mem->pages_written;
    info.mem_disk_bytes = mem->bytes_on_disk;
    info.state_bytes = snapshot::encode_state(doc).size();
    info.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    return info;
}

Result<VmConfig> Vm::snapshot_config(const std::string& state_path)
{
    json doc = TRY(snapshot::read_state_file(state_path));
    return decode<VmConfig>(TRY(section(doc, "config", state_path)), fmt::format("snapshot '{}': config", state_path));
}

Result<std::unique_ptr<Vm>> Vm::restore(
    const RestoreOptions& options, const RestoreEngineFactory& make_engine, Services services)
{
    const std::string& origin = options.state_path;
    json doc = TRY(snapshot::read_state_file(origin));
    auto what = [&](std::string_view part) { return fmt::format("snapshot '{}': {}", origin, part); };
    VmConfig config = TRY(decode<VmConfig>(TRY(section(doc, "config", origin)), what("config")));

    json memory_info = TRY(section(doc, "memory", origin));
    uint64_t mem_size = TRY(snapshot::read_as<uint64_t>(memory_info, "size", what("memory")));
    if (mem_size != config.mem_bytes)
        return make_error(
            "{}: the memory section says {} bytes, the config {}", what("memory"), mem_size, config.mem_bytes);
    if (TRY(snapshot::read_as<std::string>(memory_info, "type", what("memory"))) != "Full")
        log_debug("{}: a Diff snapshot; its memory file must have been merged into its base", origin);

    // The new VM's identity.
    for (const auto& [iface, tap] : options.net_overrides) {
        auto it
            = std::find_if(config.nets.begin(), config.nets.end(), [&](const NetConfig& n) { return n.id == iface; });
        if (it == config.nets.end())
            return make_error("network override: the snapshot has no interface '{}'", iface);
        it->tap = tap;
    }
    if (options.vsock_uds_path) {
        if (!config.vsock)
            return make_error("vsock override: the snapshot has no vsock device");
        config.vsock->socket = *options.vsock_uds_path;
    }
    if (options.engine)
        config.engine = *options.engine;
    config.track_dirty_pages = options.track_dirty_pages;
    config.hugepages = false; // a private file mapping (or the Uffd backend's memory) is made of ordinary pages

    auto memory = options.mem_backend == MemBackend::Uffd
        ? TRY(uffd::map_with_handler(options.mem_path, config.mem_bytes))
        : TRY(GuestMemory::map_file(options.mem_path, config.mem_bytes));
    std::unique_ptr<Vm> vm(new Vm(config, std::move(memory), std::move(services)));
    TRY(vm->build_devices());
    if (config.track_dirty_pages)
        vm->m_dirty = std::make_unique<DirtyBitmap>(vm->m_memory.end_address());

    MachineState machine = TRY(decode<MachineState>(TRY(section(doc, "machine", origin)), what("machine")));
    auto engine = TRY(make_engine(config, machine.tsc_khz));
    TRY(vm->attach_engine(std::move(engine)));
    TRY(vm->restore_state(doc));
    // A new VM Generation ID, announced to the guest (its GED interrupt is pending when the vCPUs
    // start): the kernel reseeds its RNG, so clones of one snapshot do not share random streams.
    TRY_CTX(vm->new_generation(), "VM generation ID");
    return vm;
}

Result<void> Vm::restore_state(const json& doc)
{
    // Errors name the part; restore() prefixed the file already in what it read itself.
    auto vcpus = TRY(snapshot::read_as<std::vector<CpuState>>(doc, "vcpus", "snapshot"));
    if (vcpus.size() != m_vcpus.size())
        return make_error("the snapshot holds {} vCPUs, its config {}", vcpus.size(), m_vcpus.size());
    auto cpuid = TRY(snapshot::read_as<std::vector<CpuidTable>>(doc, "cpuid", "snapshot"));
    if (cpuid.size() != m_vcpus.size())
        return make_error("the snapshot holds CPUID for {} vCPUs, expected {}", cpuid.size(), m_vcpus.size());
    for (uint32_t i = 0; i < m_vcpus.size(); ++i) {
        auto target = TRY_CTX(m_engine->cpuid_table(i), "reading the target engine's CPUID");
        auto missing = missing_features(cpuid[i], target);
        if (!missing.empty())
            return make_error("the {} engine cannot present the CPU the guest saw: missing {}", m_engine->name(),
                fmt::join(missing, ", "));
        // Where the engine can, the guest keeps seeing exactly the CPU it saw (a guest started on
        // the soft engine does not find new features on KVM, and can go back).
        TRY_CTX(m_engine->present_cpuid(i, cpuid[i]), fmt::format("vCPU {}: presenting the snapshot's CPUID", i));
    }

    MachineState machine = TRY(snapshot::read_as<MachineState>(doc, "machine", "snapshot"));
    // Guest time stays stopped until resume().
    m_engine->pause_clock(true);
    bool machine_last = m_engine->restore_machine_after_vcpus();
    if (!machine_last)
        TRY_CTX(m_engine->restore_machine(machine), "restoring the interrupt controllers and timers");
    for (uint32_t i = 0; i < m_vcpus.size(); ++i) {
        if (vcpus[i].mp_state > MpState::Halted)
            return make_error("vCPU {}: invalid MP state", i);
        TRY_CTX(m_vcpus[i]->set_state(vcpus[i]), fmt::format("restoring vCPU {}", i));
    }
    if (machine_last)
        TRY_CTX(m_engine->restore_machine(machine), "restoring the interrupt controllers and timers");

    const json& devices = TRY(snapshot::read_as<json>(doc, "devices", "snapshot"));
    m_serial->restore(TRY(snapshot::read_as<Serial::State>(devices, "serial", "devices")));
    m_i8042->restore(TRY(snapshot::read_as<I8042::State>(devices, "i8042", "devices")));
    m_rtc->restore(TRY(snapshot::read_as<Rtc::State>(devices, "rtc", "devices")));
    m_acpi_pm->restore(TRY(snapshot::read_as<AcpiPm::State>(devices, "acpi_pm", "devices")));
    m_post->restore(TRY(snapshot::read_as<PostPort::State>(devices, "post", "devices")));
    auto virtio = TRY(snapshot::read_as<json>(devices, "virtio", "devices"));
    if (!virtio.is_array() || virtio.size() != m_virtio.size())
        return make_error("the snapshot holds {} virtio devices, its config builds {}",
            virtio.is_array() ? virtio.size() : 0, m_virtio.size());
    for (size_t i = 0; i < m_virtio.size(); ++i) {
        auto& transport = *m_virtio[i];
        auto type = TRY(snapshot::read_as<uint32_t>(virtio[i], "type", "virtio device"));
        if (type != static_cast<uint32_t>(transport.device().type()))
            return make_error("virtio device {}: the snapshot's is of type {}, the config built a {}", i, type,
                transport.device().name());
        // The transport comes back paused (no device thread, no guest RAM touched) until resume().
        TRY_CTX(transport.restore_state(virtio[i].at("state")),
            fmt::format("virtio device {} ({})", i, transport.device().name()));
    }
    // Restored paused: start() parks the vCPUs, resume() lets them and the devices go.
    m_paused = true;
    m_paused_vm = true;
    return {};
}

} // namespace vessel
