// vessel snapshot | suspend | snapshot-merge. A snapshot directory holds vm.state and vm.mem
// (snapshot/format.h); the VMM writes them (PUT /snapshot/create), so paths are made absolute
// here: the VMM's working directory need not be ours.
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "cli/api_client.h"
#include "cli/verbs.h"
#include "snapshot/format.h"
#include "snapshot/memory_file.h"

namespace vessel {

namespace {

namespace fs = std::filesystem;

int fail(const std::string& message)
{
    std::fprintf(stderr, "vessel: error: %s\n", message.c_str());
    return 1;
}

uint64_t allocated_bytes(const std::string& path)
{
    struct stat st { };
    return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
}

// A snapshot argument: a directory (its vm.mem and vm.state) or a memory file alone.
struct SnapshotFiles {
    std::string mem;
    std::string state; // empty: none given
};

SnapshotFiles snapshot_files(const std::string& arg)
{
    if (fs::is_directory(arg))
        return { (fs::path(arg) / snapshot::kMemFileName).string(),
            (fs::path(arg) / snapshot::kStateFileName).string() };
    return { arg, {} };
}

} // namespace

int command_snapshot(const CliOptions& o, bool suspend)
{
    std::error_code ec;
    fs::path dir = fs::absolute(o.snapshot_dir, ec);
    if (ec || (fs::create_directories(dir, ec), ec))
        return fail(fmt::format("cannot create the snapshot directory '{}': {}", o.snapshot_dir, ec.message()));
    auto client = ApiClient::connect(o.target);
    if (!client.ok())
        return fail(client.error().message());
    auto info = client->get_json("/vm/info");
    if (!info.ok())
        return fail(info.error().message());
    bool was_running = info->value("state", "") == "Running";
    if (was_running) {
        if (auto r = client->expect_ok("PATCH", "/vm", R"({"state": "Paused"})"); !r.ok())
            return fail(fmt::format("pausing {}: {}", o.target, r.error().message()));
    }
    std::string state = (dir / snapshot::kStateFileName).string(), mem = (dir / snapshot::kMemFileName).string();
    nlohmann::json body
        = { { "snapshot_type", o.diff ? "Diff" : "Full" }, { "snapshot_path", state }, { "mem_file_path", mem } };
    auto t0 = std::chrono::steady_clock::now();
    auto created = client->expect_ok("PUT", "/snapshot/create", body.dump());
    auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (!created.ok()) {
        if (was_running)
            (void)client->expect_ok("PATCH", "/vm", R"({"state": "Resumed"})");
        return fail(created.error().message());
    }
    std::printf("%s snapshot of %s in %s: state %.1f KiB, memory %.1f MiB on disk, %.0f ms\n", o.diff ? "diff" : "full",
        o.target.c_str(), dir.c_str(), allocated_bytes(state) / 1024.0, allocated_bytes(mem) / 1048576.0, ms);
    if (suspend) {
        if (auto r = client->expect_ok("PUT", "/actions", R"({"action_type": "InstanceKill"})"); !r.ok())
            return fail(
                fmt::format("the snapshot is saved, but stopping {} failed: {}", o.target, r.error().message()));
        std::printf("%s stopped; `vessel restore %s` resumes it\n", o.target.c_str(), dir.c_str());
        return 0;
    }
    if (was_running) {
        if (auto r = client->expect_ok("PATCH", "/vm", R"({"state": "Resumed"})"); !r.ok())
            return fail(
                fmt::format("the snapshot is saved, but resuming {} failed: {}", o.target, r.error().message()));
    }
    return 0;
}

int command_snapshot_merge(const CliOptions& o)
{
    SnapshotFiles base = snapshot_files(o.merge_inputs.front());
    std::vector<std::string> diffs;
    std::string latest_state;
    for (size_t i = 1; i < o.merge_inputs.size(); ++i) {
        SnapshotFiles d = snapshot_files(o.merge_inputs[i]);
        if (!d.state.empty()) {
            auto doc = snapshot::read_state_file(d.state);
            if (!doc.ok())
                return fail(doc.error().message());
            auto type = doc->contains("memory") ? (*doc)["memory"].value("type", "") : std::string();
            if (type != "Diff")
                return fail(fmt::format("'{}' is a {} snapshot: only Diff snapshots fold into a base",
                    o.merge_inputs[i], type.empty() ? "damaged" : type));
            latest_state = d.state;
        }
        diffs.push_back(d.mem);
    }
    auto copied = snapshot::merge_memory_files(base.mem, diffs);
    if (!copied.ok())
        return fail(copied.error().message());
    // The base directory now holds the latest memory: give it the latest state too.
    if (!base.state.empty() && !latest_state.empty()) {
        auto doc = snapshot::read_state_file(latest_state);
        if (!doc.ok())
            return fail(doc.error().message());
        (*doc)["memory"]["type"] = "Full";
        if (auto r = snapshot::write_state_file(base.state, *doc); !r.ok())
            return fail(r.error().message());
    }
    std::printf("merged %zu diff(s) into %s: %.1f MiB copied\n", diffs.size(), o.merge_inputs.front().c_str(),
        copied.value() / 1048576.0);
    return 0;
}

} // namespace vessel
