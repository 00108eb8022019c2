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
        all(db, "SELECT id, hash FROM credentials ORDER BY id"),
        add_cert(db,
                 "INSERT INTO device_certificates (serial, device, issued_at) VALUES (?1, ?2, ?3)"),
        revoke_certs(db,
                     "UPDATE device_certificates SET revoked_at = ?2 WHERE device = ?1 AND "
                     "revoked_at IS NULL"),
        revoked(db,
                "SELECT serial, revoked_at FROM device_certificates WHERE revoked_at IS NOT NULL "
                "ORDER BY serial") {
    db.exec("PRAGMA busy_timeout = 10000");
    db.exec("PRAGMA synchronous = FULL");
  }
  std::mutex mu;
  Database db;
  Statement put, remove, has, all, add_cert, revoke_certs, revoked;
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

Status CredentialStore::add_certificate(const std::string& serial, const std::string& device,
                                        int64_t issued_at_s) {
  try {
    std::lock_guard lock(impl_->mu);
    impl_->add_cert.bind(1, serial).bind(2, device).bind(3, issued_at_s).run();
    return Status::ok();
  } catch (const std::exception& e) {
    return detail::to_status(e, "storing a device certificate");
  }
}

Result<size_t> CredentialStore::revoke_certificates(const std::string& device, int64_t at_s) {
  try {
    std::lock_guard lock(impl_->mu);
    impl_->revoke_certs.bind(1, device).bind(2, at_s).run();
    return static_cast<size_t>(sqlite3_changes(impl_->db.get()));
  } catch (const std::exception& e) {
    return detail::to_status(e, "revoking device certificates");
  }
}

Result<std::vector<std::pair<std::string, int64_t>>> CredentialStore::revoked_certificates() {
  try {
    std::lock_guard lock(impl_->mu);
    std::vector<std::pair<std::string, int64_t>> out;
    while (impl_->revoked.step()) {
      out.emplace_back(impl_->revoked.column_text(0), impl_->revoked.column_int(1));
    }
    impl_->revoked.reset();
    return out;
  } catch (const std::exception& e) {
    impl_->revoked.reset();
    return detail::to_status(e, "reading revoked certificates");
  }
}

}  // namespace doppel::storage
