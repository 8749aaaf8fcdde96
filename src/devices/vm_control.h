// What a device may ask of the VM as a whole: stop it for a reason. Devices never see engines.
#pragma once

#include <cstdint>
#include <functional>

namespace vessel {

enum class StopReason {
    None,
    PowerOff,    // ACPI S5
    Reset,       // i8042 reset line, ACPI reset register, triple fault with reboot policy
    DebugExit,   // port 0xf4: exit status (value << 1) | 1
    TripleFault, // a vCPU shut down
    Error,       // internal error (a message is logged)
    UserQuit,    // the user asked the VMM to quit (Ctrl-A x)
    Signal,      // the VMM received SIGTERM/SIGINT/SIGHUP; exit_status is 128 + signal
};

struct StopRequest {
    StopReason reason { StopReason::None };
    int exit_status { 0 };
};

using StopFn = std::function<void(StopRequest)>;

} // namespace vessel
