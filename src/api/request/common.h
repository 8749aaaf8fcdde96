// Pieces several API resources share: rate limiters and MAC addresses in Firecracker's JSON
// shapes, and the pre-/post-boot checks with Firecracker's messages.
#pragma once

#include <array>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "api/json_body.h"
#include "base/result.h"
#include "vmm/vm_config.h"

namespace vessel {
class Vmm;
struct BalloonConfig;
} // namespace vessel

namespace vessel::api {

constexpr const char* kNotAfterStart = "The requested operation is not supported after starting the microVM.";
constexpr const char* kNotBeforeStart = "The requested operation is not supported before starting the microVM.";

// Fails with Firecracker's message unless the VM has not started / has started.
Result<void> require_not_started(const Vmm& vmm);
Result<void> require_started(const Vmm& vmm);

// RateLimiter {bandwidth?, ops?} of TokenBucket {size, one_time_burst?, refill_time}.
Result<std::optional<RateLimiterConfig>> read_rate_limiter(const JsonObject& body, std::string_view field);
nlohmann::ordered_json rate_limiter_json(const std::optional<RateLimiterConfig>& limiter);

// "06:00:AC:10:00:02" (any case) → bytes; Firecracker's message on failure.
Result<std::array<uint8_t, 6>> read_mac(const std::string& text);
std::string mac_string(const std::array<uint8_t, 6>& mac);

// Firecracker's API resource ids (path ids): "The ID cannot be empty.", "API Resource IDs can
// only contain alphanumeric characters and underscores."
Result<void> check_resource_id(const std::string& id);
// The path's resource id (drives/{id}, network-interfaces/{id}) checked as Firecracker does.
Result<std::string> path_id(const std::vector<std::string>& tokens);

// The JSON shapes GET /vm/config and the resource GETs share.
nlohmann::ordered_json machine_config_json(const Vmm& vmm);
nlohmann::ordered_json drive_json(const DiskConfig& disk);
nlohmann::ordered_json net_json(const NetConfig& net);
nlohmann::ordered_json balloon_json(const BalloonConfig& balloon);
std::optional<BalloonConfig> current_balloon(const Vmm& vmm);

} // namespace vessel::api
