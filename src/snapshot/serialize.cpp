#include "snapshot/serialize.h"

#include <stdexcept>

namespace vessel {

using nlohmann::json;

namespace {

// A field that is absent keeps its default (an older minor version did not write it); a field of
// the wrong type throws nlohmann's type_error, which the reading edge turns into an error.
template<typename T>
void get_field(const json& j, const char* key, T& out)
{
    if (!j.is_object())
        throw std::invalid_argument("expected an object");
    if (auto it = j.find(key); it != j.end())
        it->get_to(out);
}

template<typename T>
void get_optional(const json& j, const char* key, std::optional<T>& out)
{
    if (!j.is_object())
        throw std::invalid_argument("expected an object");
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
        out.reset();
        return;
    }
    out = it->get<T>();
}

template<typename T>
void put_optional(json& j, const char* key, const std::optional<T>& value)
{
    if (value)
        j[key] = *value;
}

template<size_t N>
json blob(const std::array<uint8_t, N>& bytes)
{
    return json::binary(std::vector<uint8_t>(bytes.begin(), bytes.end()));
}

template<size_t N>
void get_blob(const json& j, const char* key, std::array<uint8_t, N>& out)
{
    auto it = j.find(key);
    if (it == j.end())
        return;
    if (!it->is_binary())
        throw std::invalid_argument(fmt::format("\"{}\" is not a byte string", key));
    const auto& bytes = it->get_binary();
    if (bytes.size() != N)
        throw std::invalid_argument(fmt::format("\"{}\" holds {} bytes, expected {}", key, bytes.size(), N));
    std::copy(bytes.begin(), bytes.end(), out.begin());
}

// An enum stored as its integer value, checked against its last enumerator.
template<typename E>
void get_enum(const json& j, const char* key, E& out, E last)
{
    auto it = j.find(key);
    if (it == j.end())
        return;
    auto value = it->get<int64_t>();
    if (value < 0 || value > static_cast<int64_t>(last))
        throw std::invalid_argument(fmt::format("\"{}\" has no value {}", key, value));
    out = static_cast<E>(value);
}

} // namespace

#define PUT(f) j[#f] = s.f
#define GET(f) get_field(j, #f, s.f)

// --- Sub-structures (found by ADL from the functions below) -------------------------------------

void to_json(json& j, const SegmentReg& s);
void from_json(const json& j, SegmentReg& s);
void to_json(json& j, const SegmentReg& s)
{
    j = json::object();
    PUT(base), PUT(limit), PUT(selector), PUT(type), PUT(present), PUT(dpl), PUT(db), PUT(s), PUT(l), PUT(g), PUT(avl),
        PUT(unusable);
}
void from_json(const json& j, SegmentReg& s)
{
    GET(base), GET(limit), GET(selector), GET(type), GET(present), GET(dpl), GET(db), GET(s), GET(l), GET(g), GET(avl),
        GET(unusable);
}

void to_json(json& j, const DescriptorTableReg& s);
void from_json(const json& j, DescriptorTableReg& s);
void to_json(json& j, const DescriptorTableReg& s)
{
    j = json::object();
    PUT(base), PUT(limit);
}
void from_json(const json& j, DescriptorTableReg& s)
{
    GET(base), GET(limit);
}

void to_json(json& j, const MsrState& s);
void from_json(const json& j, MsrState& s);
void to_json(json& j, const MsrState& s)
{
    j = json::object();
    PUT(star), PUT(lstar), PUT(cstar), PUT(sfmask), PUT(kernel_gs_base), PUT(sysenter_cs), PUT(sysenter_esp),
        PUT(sysenter_eip), PUT(pat), PUT(tsc_aux), PUT(tsc_deadline), PUT(misc_enable), PUT(kvm_system_time),
        PUT(kvm_wall_clock), PUT(spec_ctrl);
}
void from_json(const json& j, MsrState& s)
{
    GET(star), GET(lstar), GET(cstar), GET(sfmask), GET(kernel_gs_base), GET(sysenter_cs), GET(sysenter_esp),
        GET(sysenter_eip), GET(pat), GET(tsc_aux), GET(tsc_deadline), GET(misc_enable), GET(kvm_system_time),
        GET(kvm_wall_clock), GET(spec_ctrl);
}

void to_json(json& j, const PendingEvents& s);
void from_json(const json& j, PendingEvents& s);
void to_json(json& j, const PendingEvents& s)
{
    j = json::object();
    PUT(exception_pending), PUT(exception_injected), PUT(exception_nr), PUT(exception_has_error_code),
        PUT(exception_error_code), PUT(interrupt_injected), PUT(interrupt_nr), PUT(interrupt_shadow), PUT(nmi_injected),
        PUT(nmi_pending), PUT(nmi_masked), PUT(sipi_vector);
}
void from_json(const json& j, PendingEvents& s)
{
    GET(exception_pending), GET(exception_injected), GET(exception_nr), GET(exception_has_error_code),
        GET(exception_error_code), GET(interrupt_injected), GET(interrupt_nr), GET(interrupt_shadow), GET(nmi_injected),
        GET(nmi_pending), GET(nmi_masked), GET(sipi_vector);
}

void to_json(json& j, const IoapicState& s);
void from_json(const json& j, IoapicState& s);
void to_json(json& j, const IoapicState& s)
{
    j = json::object();
    PUT(id), PUT(ioregsel), PUT(irr), PUT(redirection);
}
void from_json(const json& j, IoapicState& s)
{
    GET(id), GET(ioregsel), GET(irr), GET(redirection);
}

void to_json(json& j, const PicChipState& s);
void from_json(const json& j, PicChipState& s);
void to_json(json& j, const PicChipState& s)
{
    j = json::object();
    PUT(last_irr), PUT(irr), PUT(imr), PUT(isr), PUT(priority_add), PUT(irq_base), PUT(read_reg_select), PUT(poll),
        PUT(special_mask), PUT(init_state), PUT(auto_eoi), PUT(rotate_on_auto_eoi), PUT(special_fully_nested_mode),
        PUT(init4), PUT(elcr), PUT(elcr_mask);
}
void from_json(const json& j, PicChipState& s)
{
    GET(last_irr), GET(irr), GET(imr), GET(isr), GET(priority_add), GET(irq_base), GET(read_reg_select), GET(poll),
        GET(special_mask), GET(init_state), GET(auto_eoi), GET(rotate_on_auto_eoi), GET(special_fully_nested_mode),
        GET(init4), GET(elcr), GET(elcr_mask);
}

void to_json(json& j, const PitChannelState& s);
void from_json(const json& j, PitChannelState& s);
void to_json(json& j, const PitChannelState& s)
{
    j = json::object();
    PUT(count), PUT(latched_count), PUT(count_latched), PUT(status_latched), PUT(status), PUT(read_state),
        PUT(write_state), PUT(write_latch), PUT(rw_mode), PUT(mode), PUT(bcd), PUT(gate), PUT(count_load_time_ns);
}
void from_json(const json& j, PitChannelState& s)
{
    GET(count), GET(latched_count), GET(count_latched), GET(status_latched), GET(status), GET(read_state),
        GET(write_state), GET(write_latch), GET(rw_mode), GET(mode), GET(bcd), GET(gate), GET(count_load_time_ns);
}

void to_json(json& j, const PitState& s);
void from_json(const json& j, PitState& s);
void to_json(json& j, const PitState& s)
{
    j = json::object();
    PUT(channels), PUT(speaker_data_on);
}
void from_json(const json& j, PitState& s)
{
    GET(channels), GET(speaker_data_on);
}

void to_json(json& j, const TokenBucketConfig& s);
void from_json(const json& j, TokenBucketConfig& s);
void to_json(json& j, const TokenBucketConfig& s)
{
    j = json::object();
    PUT(size), PUT(one_time_burst), PUT(refill_time_ms);
}
void from_json(const json& j, TokenBucketConfig& s)
{
    GET(size), GET(one_time_burst), GET(refill_time_ms);
}

void to_json(json& j, const RateLimiterConfig& s);
void from_json(const json& j, RateLimiterConfig& s);
void to_json(json& j, const RateLimiterConfig& s)
{
    j = json::object();
    put_optional(j, "bandwidth", s.bandwidth);
    put_optional(j, "ops", s.ops);
}
void from_json(const json& j, RateLimiterConfig& s)
{
    get_optional(j, "bandwidth", s.bandwidth);
    get_optional(j, "ops", s.ops);
}

void to_json(json& j, const DiskConfig& s);
void from_json(const json& j, DiskConfig& s);
void to_json(json& j, const DiskConfig& s)
{
    j = json::object();
    PUT(path), PUT(read_only), PUT(serial), PUT(id), PUT(root), PUT(cache_type), PUT(io_engine);
    put_optional(j, "partuuid", s.partuuid);
    put_optional(j, "rate_limiter", s.rate_limiter);
}
void from_json(const json& j, DiskConfig& s)
{
    GET(path), GET(read_only), GET(serial), GET(id), GET(root), GET(cache_type), GET(io_engine);
    get_optional(j, "partuuid", s.partuuid);
    get_optional(j, "rate_limiter", s.rate_limiter);
}

void to_json(json& j, const NetConfig& s);
void from_json(const json& j, NetConfig& s);
void to_json(json& j, const NetConfig& s)
{
    j = json::object();
    PUT(tap), PUT(id);
    put_optional(j, "mac", s.mac);
    put_optional(j, "rx_rate_limiter", s.rx_rate_limiter);
    put_optional(j, "tx_rate_limiter", s.tx_rate_limiter);
}
void from_json(const json& j, NetConfig& s)
{
    GET(tap), GET(id);
    get_optional(j, "mac", s.mac);
    get_optional(j, "rx_rate_limiter", s.rx_rate_limiter);
    get_optional(j, "tx_rate_limiter", s.tx_rate_limiter);
}

void to_json(json& j, const VsockConfig& s);
void from_json(const json& j, VsockConfig& s);
void to_json(json& j, const VsockConfig& s)
{
    j = json::object();
    PUT(cid), PUT(socket);
}
void from_json(const json& j, VsockConfig& s)
{
    GET(cid), GET(socket);
}

void to_json(json& j, const MmdsConfig& s);
void from_json(const json& j, MmdsConfig& s);
void to_json(json& j, const MmdsConfig& s)
{
    j = json::object();
    PUT(version), PUT(network_interfaces), PUT(ipv4_address), PUT(imds_compat);
}
void from_json(const json& j, MmdsConfig& s)
{
    GET(version), GET(network_interfaces), GET(ipv4_address), GET(imds_compat);
}

void to_json(json& j, const I8042::QueuedByte& s);
void from_json(const json& j, I8042::QueuedByte& s);
void to_json(json& j, const I8042::QueuedByte& s)
{
    j = json::object();
    PUT(value);
    j["source"] = static_cast<int>(s.source);
}
void from_json(const json& j, I8042::QueuedByte& s)
{
    GET(value);
    get_enum(j, "source", s.source, I8042::Source::Aux);
}

// --- The types snapshots use directly ------------------------------------------------------------

void to_json(json& j, const CpuState& s)
{
    j = json::object();
    PUT(gpr), PUT(rip), PUT(rflags), PUT(cs), PUT(ds), PUT(es), PUT(fs), PUT(gs), PUT(ss), PUT(tr), PUT(ldtr), PUT(gdt),
        PUT(idt), PUT(cr0), PUT(cr2), PUT(cr3), PUT(cr4), PUT(cr8), PUT(efer), PUT(apic_base), PUT(xcr0), PUT(dr),
        PUT(dr6), PUT(dr7), PUT(msrs), PUT(tsc), PUT(events);
    j["xsave"] = blob(s.xsave);
    j["lapic"] = blob(s.lapic);
    j["mp_state"] = static_cast<uint32_t>(s.mp_state);
}
void from_json(const json& j, CpuState& s)
{
    GET(gpr), GET(rip), GET(rflags), GET(cs), GET(ds), GET(es), GET(fs), GET(gs), GET(ss), GET(tr), GET(ldtr), GET(gdt),
        GET(idt), GET(cr0), GET(cr2), GET(cr3), GET(cr4), GET(cr8), GET(efer), GET(apic_base), GET(xcr0), GET(dr),
        GET(dr6), GET(dr7), GET(msrs), GET(tsc), GET(events);
    get_blob(j, "xsave", s.xsave);
    get_blob(j, "lapic", s.lapic);
    get_enum(j, "mp_state", s.mp_state, MpState::Halted);
}

void to_json(json& j, const MachineState& s)
{
    j = json::object();
    PUT(ioapic), PUT(pic), PUT(pit), PUT(guest_time_ns), PUT(tsc_khz);
}
void from_json(const json& j, MachineState& s)
{
    GET(ioapic), GET(pic), GET(pit), GET(guest_time_ns), GET(tsc_khz);
}

void to_json(json& j, const CpuidEntry& s)
{
    j = json::object();
    PUT(function), PUT(index), PUT(significant_index), PUT(eax), PUT(ebx), PUT(ecx), PUT(edx);
}
void from_json(const json& j, CpuidEntry& s)
{
    GET(function), GET(index), GET(significant_index), GET(eax), GET(ebx), GET(ecx), GET(edx);
}

void to_json(json& j, const VmConfig& s)
{
    j = json::object();
    PUT(kernel), PUT(initrd), PUT(cmdline), PUT(mem_bytes), PUT(cpus), PUT(hugepages), PUT(disks), PUT(nets), PUT(rng),
        PUT(balloon), PUT(balloon_target_bytes), PUT(balloon_deflate_on_oom), PUT(balloon_stats_interval_s);
    j["engine"] = static_cast<int>(s.engine);
    j["boot"] = static_cast<int>(s.boot);
    j["on_reset"] = static_cast<int>(s.on_reset);
    j["console"] = static_cast<int>(s.console);
    put_optional(j, "vsock", s.vsock);
    put_optional(j, "rng_rate_limiter", s.rng_rate_limiter);
    put_optional(j, "mmds", s.mmds);
}
void from_json(const json& j, VmConfig& s)
{
    GET(kernel), GET(initrd), GET(cmdline), GET(mem_bytes), GET(cpus), GET(hugepages), GET(disks), GET(nets), GET(rng),
        GET(balloon), GET(balloon_target_bytes), GET(balloon_deflate_on_oom), GET(balloon_stats_interval_s);
    get_enum(j, "engine", s.engine, EngineKind::Soft);
    get_enum(j, "boot", s.boot, BootPath::Pvh);
    get_enum(j, "on_reset", s.on_reset, ResetAction::Exit);
    get_enum(j, "console", s.console, ConsoleKind::Virtio);
    get_optional(j, "vsock", s.vsock);
    get_optional(j, "rng_rate_limiter", s.rng_rate_limiter);
    get_optional(j, "mmds", s.mmds);
}

void to_json(json& j, const Serial::State& s)
{
    j = json::object();
    PUT(ier), PUT(lcr), PUT(mcr), PUT(fcr), PUT(msr), PUT(scr), PUT(dll), PUT(dlm), PUT(rbr), PUT(overrun),
        PUT(thr_interrupt), PUT(rx_fifo), PUT(rx_queue);
}
void from_json(const json& j, Serial::State& s)
{
    GET(ier), GET(lcr), GET(mcr), GET(fcr), GET(msr), GET(scr), GET(dll), GET(dlm), GET(rbr), GET(overrun),
        GET(thr_interrupt), GET(rx_fifo), GET(rx_queue);
}

void to_json(json& j, const I8042::State& s)
{
    j = json::object();
    PUT(ram), PUT(output_port), PUT(pending_command), PUT(last_write_was_command), PUT(output_full), PUT(output),
        PUT(controller_queue), PUT(kbd_pending_command), PUT(kbd_scancode_set), PUT(kbd_leds), PUT(kbd_typematic),
        PUT(kbd_scanning), PUT(kbd_last_sent), PUT(kbd_queue), PUT(xlate_break);
}
void from_json(const json& j, I8042::State& s)
{
    GET(ram), GET(output_port), GET(pending_command), GET(last_write_was_command), GET(output_full), GET(output),
        GET(controller_queue), GET(kbd_pending_command), GET(kbd_scancode_set), GET(kbd_leds), GET(kbd_typematic),
        GET(kbd_scanning), GET(kbd_last_sent), GET(kbd_queue), GET(xlate_break);
}

void to_json(json& j, const Rtc::State& s)
{
    j = json::object();
    j["cmos"] = blob(s.cmos);
    PUT(index), PUT(nmi_disabled), PUT(offset_ns), PUT(flags_checked_ns);
}
void from_json(const json& j, Rtc::State& s)
{
    get_blob(j, "cmos", s.cmos);
    GET(index), GET(nmi_disabled), GET(offset_ns), GET(flags_checked_ns);
}

void to_json(json& j, const AcpiPm::State& s)
{
    j = json::object();
    PUT(sleep_status);
}
void from_json(const json& j, AcpiPm::State& s)
{
    GET(sleep_status);
}

void to_json(json& j, const PostPort::State& s)
{
    j = json::object();
    PUT(last);
}
void from_json(const json& j, PostPort::State& s)
{
    GET(last);
}

#undef PUT
#undef GET

} // namespace vessel
