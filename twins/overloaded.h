// Overloaded: lambdas as one visitor for std::visit, so that a variant alternative without a case
// fails to compile: std::visit(Overloaded{[](const A&) {...}, [](const B&) {...}}, v).
#pragma once

namespace doppel::twins {

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

}  // namespace doppel::twins
