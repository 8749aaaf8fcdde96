// Strict reading of JSON request bodies into typed values, with the error wording of
// Firecracker's deserializer (serde): a client that matches on Firecracker's fault messages sees
// the same words. An error's message is what follows "An error occurred when deserializing the
// json body of a request: " in the fault message (the router adds that prefix and the final
// period). Serde also appends " at line L column C"; we do not track positions, so that part is
// left out.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.h"

namespace vessel::api {

// Parses `text` as one JSON document. Errors as serde_json words them ("expected value",
// "EOF while parsing an object", "trailing characters", ...).
Result<nlohmann::json> parse_json(std::string_view text);

// serde's description of a JSON value in "invalid type" errors: `string "x"`, `integer \`1\``,
// `floating point \`1.5\``, `boolean \`true\``, `null`, `map`, `sequence`.
std::string describe_json_value(const nlohmann::json& value);

// One JSON object read as a struct with a known set of fields (serde's deny_unknown_fields).
class JsonObject {
public:
    // `value` must be an object ("invalid type: X, expected struct NAME" otherwise) whose keys
    // are all in `fields` ("unknown field `k`, expected one of `a`, `b`").
    static Result<JsonObject> read(
        const nlohmann::json& value, std::string_view struct_name, std::initializer_list<std::string_view> fields);
    // The same, straight from a request body.
    static Result<JsonObject> parse(
        std::string_view body, std::string_view struct_name, std::initializer_list<std::string_view> fields);

    bool has(std::string_view field) const;
    const nlohmann::json* raw(std::string_view field) const; // nullptr when absent or null

    // Optional fields: absent or null gives std::nullopt. Required fields: "missing field `f`".
    Result<std::optional<std::string>> opt_string(std::string_view field) const;
    Result<std::string> string(std::string_view field) const;
    Result<std::optional<bool>> opt_bool(std::string_view field) const;
    Result<bool> boolean(std::string_view field) const;
    // Unsigned integers of a Rust type: `type_name` is "u8", "u16", "u32", "u64" or "usize" and
    // decides the range ("invalid value: integer `300`, expected u8").
    Result<std::optional<uint64_t>> opt_unsigned(std::string_view field, std::string_view type_name) const;
    Result<uint64_t> unsigned_int(std::string_view field, std::string_view type_name) const;
    // A unit-variant enum: "unknown variant `X`, expected one of `A`, `B`".
    Result<std::optional<std::string>> opt_variant(
        std::string_view field, std::initializer_list<std::string_view> variants) const;
    Result<std::string> variant(std::string_view field, std::initializer_list<std::string_view> variants) const;
    // A nested struct.
    Result<std::optional<JsonObject>> opt_object(
        std::string_view field, std::string_view struct_name, std::initializer_list<std::string_view> fields) const;

    const nlohmann::json& json() const { return m_value; }

private:
    explicit JsonObject(nlohmann::json value)
        : m_value(std::move(value))
    {
    }
    Error missing(std::string_view field) const;

    nlohmann::json m_value;
};

// serde's "expected one of `a`, `b`" list ("expected `a` or `b`", "expected `a`").
std::string expected_one_of(std::initializer_list<std::string_view> names);

} // namespace vessel::api
