// Logging facade. Call sites format with fmt (cheap, header-only); the sink is spdlog, compiled
// in exactly one translation unit (log.cpp) — header-only spdlog costs seconds per file.
#pragma once

#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

#include "base/result.h"

namespace vessel {

enum class LogLevel { Trace, Debug, Info, Warn, Error, Off };

// Messages go to stderr as "vessel: <level>: <message>", or, once configure_log_file() is called
// (PUT /logger, --log-path), to that file in Firecracker's format:
// "<local time> [<instance id>:<thread>[:<LEVEL>][:<file>:<line>]] <message>".
void set_log_level(LogLevel level);
LogLevel log_level();
Result<LogLevel> parse_log_level(std::string_view name);
bool log_enabled(LogLevel level);
void log_write(LogLevel level, std::string_view message, const char* file = nullptr, unsigned line = 0);

struct LogFileOptions {
    std::string instance_id { "anonymous-instance" };
    bool show_level { false };
    bool show_origin { false };
};
// Sends the log to `path` (a file or named pipe that must exist, opened non-blocking, as
// Firecracker), or back to stderr with an empty path.
Result<void> configure_log_file(const std::string& path, const LogFileOptions& options);
void set_log_instance_id(const std::string& id);
// Messages that could not be written (a full pipe), for the metrics file.
uint64_t log_missed_count();

// A format string that also records where it was written (for show_log_origin). The builtins
// rather than std::source_location: clang 14 (the fuzz build) lacks the latter with libstdc++ 12.
template<typename... Args>
struct LogFormat {
    fmt::format_string<Args...> format;
    const char* file;
    unsigned line;

    template<typename S>
    consteval LogFormat(const S& text, const char* f = __builtin_FILE(), unsigned l = __builtin_LINE())
        : format(text)
        , file(f)
        , line(l)
    {
    }
};

template<typename... Args>
void log_at(LogLevel level, LogFormat<std::type_identity_t<Args>...> format, Args&&... args)
{
    if (log_enabled(level))
        log_write(level, fmt::format(format.format, std::forward<Args>(args)...), format.file, format.line);
}

template<typename... Args>
void log_debug(LogFormat<std::type_identity_t<Args>...> format, Args&&... args)
{
    if (log_enabled(LogLevel::Debug))
        log_write(LogLevel::Debug, fmt::format(format.format, std::forward<Args>(args)...), format.file, format.line);
}

template<typename... Args>
void log_info(LogFormat<std::type_identity_t<Args>...> format, Args&&... args)
{
    if (log_enabled(LogLevel::Info))
        log_write(LogLevel::Info, fmt::format(format.format, std::forward<Args>(args)...), format.file, format.line);
}

template<typename... Args>
void log_warn(LogFormat<std::type_identity_t<Args>...> format, Args&&... args)
{
    if (log_enabled(LogLevel::Warn))
        log_write(LogLevel::Warn, fmt::format(format.format, std::forward<Args>(args)...), format.file, format.line);
}

template<typename... Args>
void log_error(LogFormat<std::type_identity_t<Args>...> format, Args&&... args)
{
    if (log_enabled(LogLevel::Error))
        log_write(LogLevel::Error, fmt::format(format.format, std::forward<Args>(args)...), format.file, format.line);
}

} // namespace vessel
