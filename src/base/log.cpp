#include "base/log.h"

#include <atomic>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace vessel {

namespace {

std::atomic<LogLevel> g_level { LogLevel::Warn };

spdlog::level::level_enum to_spdlog(LogLevel level)
{
    switch (level) {
    case LogLevel::Trace: return spdlog::level::trace;
    case LogLevel::Debug: return spdlog::level::debug;
    case LogLevel::Info: return spdlog::level::info;
    case LogLevel::Warn: return spdlog::level::warn;
    case LogLevel::Error: return spdlog::level::err;
    case LogLevel::Off: return spdlog::level::off;
    }
    return spdlog::level::warn;
}

spdlog::logger& logger()
{
    static std::shared_ptr<spdlog::logger> instance = [] {
        auto l = spdlog::stderr_logger_mt("vessel");
        l->set_pattern("vessel: %l: %v");
        l->set_level(spdlog::level::trace); // filtering happens in log_enabled()
        return l;
    }();
    return *instance;
}

} // namespace

void set_log_level(LogLevel level) { g_level.store(level, std::memory_order_relaxed); }

bool log_enabled(LogLevel level)
{
    return level != LogLevel::Off && level >= g_level.load(std::memory_order_relaxed);
}

void log_write(LogLevel level, std::string_view message) { logger().log(to_spdlog(level), "{}", message); }

Result<LogLevel> parse_log_level(std::string_view name)
{
    if (name == "trace")
        return LogLevel::Trace;
    if (name == "debug")
        return LogLevel::Debug;
    if (name == "info")
        return LogLevel::Info;
    if (name == "warn")
        return LogLevel::Warn;
    if (name == "error")
        return LogLevel::Error;
    if (name == "off")
        return LogLevel::Off;
    return make_error("unknown log level '{}' (choose trace, debug, info, warn, error or off)", name);
}

} // namespace vessel
