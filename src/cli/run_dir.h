// Where running VMs can be found: one API socket per VM in a run directory
// ($XDG_RUNTIME_DIR/vessel, /run/vessel for root, else /tmp/vessel-<uid>), named <id>.sock; a VM
// whose socket lives elsewhere (--api-sock) leaves a symlink there. `vessel ls` lists it and the
// other verbs take an id or a socket path.
#pragma once

#include <string>
#include <vector>

#include "base/result.h"

namespace vessel {

// The run directory (created 0700 if missing).
Result<std::string> run_directory();
// Firecracker's instance id rule: 1 to 64 characters, letters, digits and '-'.
Result<void> check_instance_id(const std::string& id);
// The socket path for a VM id or a path given by the user ("./x.sock", "/run/vm.sock").
Result<std::string> resolve_vm_socket(const std::string& id_or_path);
// Every <id>.sock in the run directory (sockets and symlinks, live or not).
std::vector<std::string> list_vm_sockets();

} // namespace vessel
