// Closed sets as data (STYLE): one constexpr table of names per enum, in the enum's order, serves
// both directions — name() for to_string, parse() for reading it back — so the two can never
// disagree. Each table is checked against its enum's last enumerator where it is declared:
//
//   constexpr NameTable<Color, 3> kColorNames{{"red", "green", "blue"}};
//   static_assert(kColorNames.covers(Color::kBlue));
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string_view>

namespace doppel::twins {

template <class E, size_t N>
class NameTable {
 public:
  constexpr explicit NameTable(std::array<std::string_view, N> names) : names_(names) {}

  // The name of `v` ("?" for a value outside the enum, which a cast could make).
  constexpr std::string_view name(E v) const {
    const auto i = static_cast<size_t>(v);
    return i < N ? names_[i] : std::string_view("?");
  }
  // The value named `s`, if any.
  constexpr std::optional<E> parse(std::string_view s) const {
    for (size_t i = 0; i < N; ++i) {
      if (names_[i] == s) return static_cast<E>(i);
    }
    return std::nullopt;
  }
  // True when the table has exactly one name per value up to `last`, the enum's last enumerator.
  static constexpr bool covers(E last) { return static_cast<size_t>(last) + 1 == N; }
  static constexpr size_t size() { return N; }

 private:
  std::array<std::string_view, N> names_;
};

}  // namespace doppel::twins
