// Firecracker's --config-file: one JSON document with every resource of the VM ("boot-source",
// "drives", "machine-config", "network-interfaces", "vsock", "balloon", "entropy", "logger",
// "metrics", "mmds-config"), applied through the same request handlers as the API (so it is
// validated exactly as the API would validate each resource), in Firecracker's order.
#pragma once

#include <string>

#include "api/router.h"
#include "base/result.h"

namespace vessel::api {

Result<void> apply_config_file(Router& router, const std::string& path);

} // namespace vessel::api
