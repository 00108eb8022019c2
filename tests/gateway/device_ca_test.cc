// The device CA (--device-auth x509) on real files: a CA created at first start and loaded again
// after, certificates that verify against it with the device id as CN, a device's CSR signed only
// when its CN is the device id, and revocations that DeviceAuth records in SQLite and writes to
// the CRL, which then lists exactly the revoked serials. OpenSSL checks every claim.
#include <doctest/doctest.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "gateway/device_auth.h"
#include "gateway/device_ca.h"
#include "storage/sqlite/credential_store.h"
#include "storage/sqlite/sqlite_store.h"
#include "twins/metrics.h"

using namespace doppel;
using gateway::DeviceCa;
using gateway::DeviceCaOptions;

namespace {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::mt19937_64 rng{std::random_device{}()};
    path = std::filesystem::temp_directory_path() / ("doppel-ca-" + std::to_string(rng()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

std::string read(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

X509* parse_cert(const std::string& pem) {
  BIO* b = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* c = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  return c;
}

std::string cn_of(X509* cert) {
  char buf[256] = "";
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf);
  return buf;
}

// Whether `cert_pem` was signed by the CA in `ca_pem`.
bool signed_by(const std::string& cert_pem, const std::string& ca_pem) {
  X509* cert = parse_cert(cert_pem);
  X509* ca = parse_cert(ca_pem);
  const bool ok = cert != nullptr && ca != nullptr && X509_verify(cert, X509_get0_pubkey(ca)) == 1;
  X509_free(cert);
  X509_free(ca);
  return ok;
}

// A CSR for `cn` with a fresh key, as a device would make it.
std::string csr_for(const std::string& cn) {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  X509_REQ* req = X509_REQ_new();
  X509_NAME* name = X509_REQ_get_subject_name(req);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_REQ_set_pubkey(req, key);
  X509_REQ_sign(req, key, EVP_sha256());
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_REQ(b, req);
  char* data = nullptr;
  const long n = BIO_get_mem_data(b, &data);
  std::string pem(data, static_cast<size_t>(n));
  BIO_free(b);
  X509_REQ_free(req);
  EVP_PKEY_free(key);
  return pem;
}

// The serials (hex) the CRL file lists, after checking the CA signed it.
std::set<std::string> crl_serials(const std::string& crl_pem, const std::string& ca_pem) {
  BIO* b = BIO_new_mem_buf(crl_pem.data(), static_cast<int>(crl_pem.size()));
  X509_CRL* crl = PEM_read_bio_X509_CRL(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  REQUIRE(crl != nullptr);
  X509* ca = parse_cert(ca_pem);
  CHECK(X509_CRL_verify(crl, X509_get0_pubkey(ca)) == 1);
  X509_free(ca);
  std::set<std::string> out;
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl);
  for (int i = 0; i < sk_X509_REVOKED_num(revoked); ++i) {
    const ASN1_INTEGER* serial = X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revoked, i));
    BIGNUM* n = ASN1_INTEGER_to_BN(serial, nullptr);
    char* hex = BN_bn2hex(n);
    out.insert(hex);
    OPENSSL_free(hex);
    BN_free(n);
  }
  X509_CRL_free(crl);
  return out;
}

}  // namespace

TEST_CASE("the CA is created owner-only at first start and the same one is loaded after") {
  TempDir tmp;
  const std::string dir = (tmp.path / "device-ca").string();
  auto first = DeviceCa::open(DeviceCaOptions{dir, "", ""});
  REQUIRE_MESSAGE(first, first.status().to_string());
  struct stat st {};
  REQUIRE(::stat((dir + "/ca.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(::stat(dir.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  const std::string pem = (*first)->ca_pem();
  auto again = DeviceCa::open(DeviceCaOptions{dir, "", ""});
  REQUIRE(again);
  CHECK((*again)->ca_pem() == pem);
  // A certificate issued by the first is trusted by the reloaded one's certificate.
  auto cert = (*first)->issue("pump-1");
  REQUIRE(cert);
  CHECK(signed_by(cert->certificate_pem, (*again)->ca_pem()));
  // A key that does not match the certificate is refused with what to check.
  std::ofstream((tmp.path / "other.key")) << (*first)->issue("x")->private_key_pem;
  auto mismatched = DeviceCa::open(
      DeviceCaOptions{dir + "2", dir + "/ca.pem", (tmp.path / "other.key").string()});
  REQUIRE_FALSE(mismatched);
  CHECK(mismatched.status().message().find("does not match") != std::string::npos);
}

TEST_CASE("issued certificates carry the device id as CN; a CSR is signed only for its own id") {
  TempDir tmp;
  auto ca = DeviceCa::open(DeviceCaOptions{(tmp.path / "ca").string(), "", ""});
  REQUIRE(ca);
  auto issued = (*ca)->issue("thing-7");
  REQUIRE(issued);
  X509* cert = parse_cert(issued->certificate_pem);
  REQUIRE(cert != nullptr);
  CHECK(cn_of(cert) == "thing-7");
  // The key returned belongs to the certificate.
  BIO* kb = BIO_new_mem_buf(issued->private_key_pem.data(),
                            static_cast<int>(issued->private_key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
  BIO_free(kb);
  CHECK(X509_check_private_key(cert, key) == 1);
  EVP_PKEY_free(key);
  X509_free(cert);
  CHECK(signed_by(issued->certificate_pem, issued->ca_pem));

  auto signed_csr = (*ca)->sign("thing-8", csr_for("thing-8"));
  REQUIRE_MESSAGE(signed_csr, signed_csr.status().to_string());
  CHECK(signed_csr->private_key_pem.empty());
  CHECK(signed_by(signed_csr->certificate_pem, issued->ca_pem));
  auto wrong = (*ca)->sign("thing-8", csr_for("thing-9"));
  REQUIRE_FALSE(wrong);
  CHECK(wrong.status().code() == StatusCode::kInvalidArgument);
  CHECK(wrong.status().message().find("thing-9") != std::string::npos);
  CHECK((*ca)->sign("thing-8", "not a csr").status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("revocations are recorded and the CRL lists exactly the revoked serials") {
  TempDir tmp;
  Metrics metrics;
  const std::string db = (tmp.path / "doppel.db").string();
  storage::StoreOptions options;
  options.path = db;
  auto twins = storage::SqliteTwinStore::open(options, metrics);  // migrates the schema
  REQUIRE(twins);
  auto creds = storage::CredentialStore::open(db);
  REQUIRE(creds);
  auto ca = DeviceCa::open(DeviceCaOptions{(tmp.path / "ca").string(), "", ""});
  REQUIRE(ca);
  gateway::DeviceAuthOptions auth_options;
  auth_options.dir = (tmp.path / "mosquitto").string();
  auth_options.ca = ca->get();
  gateway::DeviceAuth auth(auth_options, **creds);
  int reloads = 0;
  std::vector<std::string> kicked;
  auth.on_change([&] { ++reloads; });
  auth.on_revoked([&](const std::string& id) { kicked.push_back(id); });
  REQUIRE(auth.start());
  CHECK(crl_serials(read((*ca)->crl_file()), (*ca)->ca_pem()).empty());

  auto a1 = auth.issue_certificate("dev-a", "");
  auto a2 = auth.issue_certificate("dev-a", "");
  auto b1 = auth.issue_certificate("dev-b", "");
  REQUIRE(a1);
  REQUIRE(a2);
  REQUIRE(b1);
  CHECK(auth.issue_certificate("dev:colon", "").status().code() == StatusCode::kInvalidId);
  const int before = reloads;
  auto n = auth.revoke_certificates("dev-a");
  REQUIRE(n);
  CHECK(*n == 2);
  CHECK(reloads == before + 1);
  CHECK(kicked == std::vector<std::string>{"dev-a"});
  CHECK(crl_serials(read((*ca)->crl_file()), (*ca)->ca_pem()) ==
        std::set<std::string>{a1->serial, a2->serial});
  // Revoking again changes nothing and reloads nothing.
  CHECK(*auth.revoke_certificates("dev-a") == 0);
  CHECK(reloads == before + 1);
  // The ACL confines devices to their own topics in both dialects.
  const std::string acl = read(auth.acl_file());
  CHECK(acl.find("pattern readwrite $aws/things/%u/#") != std::string::npos);
  CHECK(acl.find("pattern readwrite twins/%u/#") != std::string::npos);
}
