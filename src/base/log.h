// Logging facade. Call sites format with fmt (cheap, header-only); the sink is spdlog, compiled
// in exactly one translation unit (log.cpp) — header-only spdlog costs seconds per file.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "base/result.h"

namespace vessel {

enum class LogLevel { Trace, Debug, Info, Warn, Error, Off };

// Messages go to stderr as "vessel: <level>: <message>".
void set_log_level(LogLevel level);
Result<LogLevel> parse_log_level(std::string_view name);
bool log_enabled(LogLevel level);
void log_write(LogLevel level, std::string_view message);

template<typename... Args>
void log_at(LogLevel level, fmt::format_string<Args...> format, Args&&... args)
{
    if (log_enabled(level))
        log_write(level, fmt::format(format, std::forward<Args>(args)...));
}

template<typename... Args>
void log_debug(fmt::format_string<Args...> format, Args&&... args)
{
    log_at(LogLevel::Debug, format, std::forward<Args>(args)...);
}

template<typename... Args>
void log_info(fmt::format_string<Args...> format, Args&&... args)
{
    log_at(LogLevel::Info, format, std::forward<Args>(args)...);
}

template<typename... Args>
void log_warn(fmt::format_string<Args...> format, Args&&... args)
{
    log_at(LogLevel::Warn, format, std::forward<Args>(args)...);
}

template<typename... Args>
void log_error(fmt::format_string<Args...> format, Args&&... args)
{
    log_at(LogLevel::Error, format, std::forward<Args>(args)...);
}

} // namespace vessel
