#include "storage/sqlite/credential_store.h"

#include "storage/sqlite/detail/sqlite.h"

namespace doppel::storage {

using detail::Database;
using detail::Statement;

struct CredentialStore::Impl {
  explicit Impl(const std::string& path)
      : db(path, SQLITE_OPEN_READWRITE),
        put(db,
            "INSERT INTO credentials (id, hash) VALUES (?1, ?2) "
            "ON CONFLICT (id) DO UPDATE SET hash = excluded.hash"),
        remove(db, "DELETE FROM credentials WHERE id = ?1"),
        has(db, "SELECT 1 FROM credentials WHERE id = ?1"),
        all(db, "SELECT id, hash FROM credentials ORDER BY id") {
    db.exec("PRAGMA busy_timeout = 10000");
    db.exec("PRAGMA synchronous = FULL");
  }
  std::mutex mu;
  Database db;
  Statement put, remove, has, all;
};

CredentialStore::CredentialStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CredentialStore::~CredentialStore() = default;

Result<std::unique_ptr<CredentialStore>> CredentialStore::open(const std::string& path) {
  try {
    return std::unique_ptr<CredentialStore>(new CredentialStore(std::make_unique<Impl>(path)));
  } catch (const std::exception& e) {
    return detail::to_status(e, "opening credentials");
  }
}

Status CredentialStore::put(const std::string& id, const std::string& hash) {
  try {
    std::lock_guard lock(impl_->mu);
    impl_->put.bind(1, id).bind(2, hash).run();
    return Status::ok();
  } catch (const std::exception& e) {
    return detail::to_status(e, "storing credentials");
  }
}

Status CredentialStore::remove(const std::string& id) {
  try {
    std::lock_guard lock(impl_->mu);
    impl_->remove.bind(1, id).run();
    return Status::ok();
  } catch (const std::exception& e) {
    return detail::to_status(e, "removing credentials");
  }
}

Result<bool> CredentialStore::has(const std::string& id) {
  try {
    std::lock_guard lock(impl_->mu);
    impl_->has.bind(1, id);
    const bool found = impl_->has.step();
    impl_->has.reset();
    return found;
  } catch (const std::exception& e) {
    return detail::to_status(e, "reading credentials");
  }
}

Status CredentialStore::for_each(
    const std::function<void(const std::string&, const std::string&)>& fn) {
  try {
    std::lock_guard lock(impl_->mu);
    while (impl_->all.step()) fn(impl_->all.column_text(0), impl_->all.column_text(1));
    impl_->all.reset();
    return Status::ok();
  } catch (const std::exception& e) {
    impl_->all.reset();
    return detail::to_status(e, "reading credentials");
  }
}

}  // namespace doppel::storage
