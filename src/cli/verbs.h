// The CLI verbs that act on running VMs through their API sockets (like virsh).
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

#include "cli/options.h"

namespace vessel {

int command_ls(const CliOptions& options);
int command_info(const CliOptions& options);
int command_pause_resume(const CliOptions& options, bool pause);
// stop: InstanceStop, then wait until the VMM is gone; kill: InstanceKill.
int command_stop(const CliOptions& options, bool kill);
int command_console(const CliOptions& options);
int command_top(const CliOptions& options);
// snapshot (suspend: then stop the VM) and snapshot-merge: snapshot_verbs.cpp.
int command_snapshot(const CliOptions& options, bool suspend);
int command_snapshot_merge(const CliOptions& options);
// uffd-handler: uffd_handler_verb.cpp.
int command_uffd_handler(const CliOptions& options);

// GET /vm/info of every VM in the run directory that answers.
std::vector<nlohmann::json> collect_vm_infos();

} // namespace vessel
