// A small JSON value, parser and writer for the files model folders hold (config.json, preprocessor_config.json,
// model.safetensors.index.json) and for safetensors headers. libtorch ships no JSON library; these files are small
// and well formed, so a strict recursive-descent parser is all that is needed. Errors name the file and the byte.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace g2l::json {

class Value {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };

  Value() = default;
  static Value boolean(bool b);
  static Value number(double d);
  static Value string(std::string s);
  static Value array(std::vector<Value> items = {});
  static Value object();

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::Null; }
  bool is_bool() const { return kind_ == Kind::Bool; }
  bool is_number() const { return kind_ == Kind::Number; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_array() const { return kind_ == Kind::Array; }
  bool is_object() const { return kind_ == Kind::Object; }

  bool as_bool() const { return bool_; }
  double as_number() const { return number_; }
  const std::string& as_string() const { return string_; }
  const std::vector<Value>& items() const { return array_; }
  std::vector<Value>& items() { return array_; }
  /** Object members in file order (safetensors and config order matter to nobody, but stable output is nicer). */
  const std::vector<std::pair<std::string, Value>>& members() const { return object_; }

  /** Member lookup; nullptr when absent or when this is not an object. */
  const Value* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }
  /** Sets (or replaces) a member of an object. */
  Value& set(const std::string& key, Value v);

  /** Serialises compactly (indent < 0) or pretty-printed. Numbers that are integers print without a fraction. */
  std::string dump(int indent = -1) const;

 private:
  Kind kind_ = Kind::Null;
  bool bool_ = false;
  double number_ = 0;
  std::string string_;
  std::vector<Value> array_;
  std::vector<std::pair<std::string, Value>> object_;
};

/** Parses `text`; throws g2l::Error "<what>: invalid JSON at byte N: ..." on malformed input. */
Value parse(const std::string& text, const std::string& what);

/** Reads and parses a file; throws g2l::Error naming the file when it cannot be read or parsed. */
Value parse_file(const std::string& path);

}  // namespace g2l::json
