// JSON (CBOR on disk) forms of what a snapshot holds that is not a virtio device's: the VM's
// configuration, each vCPU's CpuState, the engine-neutral MachineState, the CPUID the guest saw and
// the legacy devices' State structs. Reading a field of the wrong type or a missing required field
// is an error naming it (nlohmann's type errors are caught at this edge); fields added by a later
// minor format version are optional and take their defaults when absent.
#pragma once

#include <nlohmann/json.hpp>

#include <exception>

#include "arch/x86/cpu_state.h"
#include "arch/x86/cpuid_entry.h"
#include "arch/x86/machine_state.h"
#include "base/result.h"
#include "devices/acpi_pm.h"
#include "devices/i8042.h"
#include "devices/post_port.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "vmm/vm_config.h"

namespace vessel {

void to_json(nlohmann::json& j, const CpuState& s);
void from_json(const nlohmann::json& j, CpuState& s);
void to_json(nlohmann::json& j, const MachineState& s);
void from_json(const nlohmann::json& j, MachineState& s);
void to_json(nlohmann::json& j, const CpuidEntry& e);
void from_json(const nlohmann::json& j, CpuidEntry& e);
void to_json(nlohmann::json& j, const VmConfig& c);
void from_json(const nlohmann::json& j, VmConfig& c);
void to_json(nlohmann::json& j, const Serial::State& s);
void from_json(const nlohmann::json& j, Serial::State& s);
void to_json(nlohmann::json& j, const I8042::State& s);
void from_json(const nlohmann::json& j, I8042::State& s);
void to_json(nlohmann::json& j, const Rtc::State& s);
void from_json(const nlohmann::json& j, Rtc::State& s);
void to_json(nlohmann::json& j, const AcpiPm::State& s);
void from_json(const nlohmann::json& j, AcpiPm::State& s);
void to_json(nlohmann::json& j, const PostPort::State& s);
void from_json(const nlohmann::json& j, PostPort::State& s);

namespace snapshot {

// j[key] as T, or an error naming `what` and the key.
template<typename T>
Result<T> read_as(const nlohmann::json& j, const char* key, std::string_view what)
{
    if (!j.is_object() || !j.contains(key))
        return make_error("{}: missing \"{}\"", what, key);
    try {
        return j.at(key).get<T>();
    } catch (const std::exception& e) {
        return make_error("{}: \"{}\": {}", what, key, e.what());
    }
}

} // namespace snapshot
} // namespace vessel
