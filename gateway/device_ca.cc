#include "gateway/device_ca.h"

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gateway/device_auth.h"
#include "twins/log.h"

namespace doppel::gateway {
namespace {

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using Key = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Req = std::unique_ptr<X509_REQ, Deleter<X509_REQ, X509_REQ_free>>;
using Crl = std::unique_ptr<X509_CRL, Deleter<X509_CRL, X509_CRL_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using Num = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;

constexpr long kTenYearsS = 10L * 365 * 24 * 3600;

std::string openssl_error(const std::string& what) {
  const unsigned long e = ERR_get_error();
  char buf[256] = "unknown error";
  if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return what + ": " + buf;
}

Status failed(const std::string& what) {
  return Status(StatusCode::kInternal, openssl_error(what));
}

Key new_key() { return Key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")); }

std::string pem_of(const std::function<int(BIO*)>& write) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || write(bio.get()) != 1) return {};
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) return false;
  const bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// 16 random bytes, positive, as the certificate's serial; its hex in `hex`.
bool random_serial(X509* cert, std::string& hex) {
  unsigned char raw[16];
  if (RAND_bytes(raw, sizeof raw) != 1) return false;
  raw[0] &= 0x7f;
  Num n(BN_bin2bn(raw, sizeof raw, nullptr));
  if (!n || BN_to_ASN1_INTEGER(n.get(), X509_get_serialNumber(cert)) == nullptr) return false;
  char* h = BN_bn2hex(n.get());
  hex = h;
  OPENSSL_free(h);
  return true;
}

std::string common_name(X509_NAME* name) {
  const int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (i < 0) return {};
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  unsigned char* utf8 = nullptr;
  const int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return {};
  std::string cn(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return cn;
}

}  // namespace

struct DeviceCa::Keys {
  Key key;
  Cert cert;
};

DeviceCa::DeviceCa(DeviceCaOptions options, std::unique_ptr<Keys> keys, std::string ca_pem)
    : options_(std::move(options)), keys_(std::move(keys)), ca_pem_(std::move(ca_pem)) {}
DeviceCa::~DeviceCa() = default;

std::string DeviceCa::ca_file() const {
  return options_.cert_file.empty() ? options_.dir + "/ca.pem" : options_.cert_file;
}
std::string DeviceCa::crl_file() const { return options_.dir + "/crl.pem"; }

Result<std::unique_ptr<DeviceCa>> DeviceCa::open(const DeviceCaOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) {
    return Status(StatusCode::kUnavailable, "cannot create " + options.dir + ": " + ec.message());
  }
  ::chmod(options.dir.c_str(), 0700);
  const bool given = !options.cert_file.empty();
  const std::string cert_path = given ? options.cert_file : options.dir + "/ca.pem";
  const std::string key_path = given ? options.key_file : options.dir + "/ca.key";
  auto keys = std::make_unique<Keys>();
  if (given || std::filesystem::exists(cert_path)) {
    const std::string cert_pem = read_file(cert_path);
    const std::string key_pem = read_file(key_path);
    Bio cb(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
    Bio kb(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
    keys->cert.reset(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
    keys->key.reset(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
    if (!keys->cert || !keys->key) {
      return Status(StatusCode::kInvalidArgument,
                    openssl_error("cannot read the device CA from " + cert_path + " and " +
                                  key_path + " (PEM certificate and unencrypted PEM key)"));
    }
    if (X509_check_private_key(keys->cert.get(), keys->key.get()) != 1) {
      return Status(
          StatusCode::kInvalidArgument,
          "the device CA's key " + key_path + " does not match its certificate " + cert_path);
    }
    return std::unique_ptr<DeviceCa>(new DeviceCa(options, std::move(keys), cert_pem));
  }
  // First start: a new CA.
  keys->key = new_key();
  keys->cert.reset(X509_new());
  X509* c = keys->cert.get();
  std::string serial;
  if (!keys->key || !c || X509_set_version(c, 2) != 1 || !random_serial(c, serial)) {
    return failed("creating the device CA");
  }
  X509_gmtime_adj(X509_getm_notBefore(c), -3600);
  X509_gmtime_adj(X509_getm_notAfter(c), kTenYearsS);
  X509_NAME* name = X509_get_subject_name(c);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("Doppel"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("Doppel device CA"), -1, -1, 0);
  X509_set_issuer_name(c, name);
  X509_set_pubkey(c, keys->key.get());
  if (!add_extension(c, c, NID_basic_constraints, "critical,CA:TRUE") ||
      !add_extension(c, c, NID_key_usage, "critical,keyCertSign,cRLSign") ||
      !add_extension(c, c, NID_subject_key_identifier, "hash") ||
      X509_sign(c, keys->key.get(), EVP_sha256()) == 0) {
    return failed("signing the device CA");
  }
  const std::string cert_pem = pem_of([&](BIO* b) { return PEM_write_bio_X509(b, c); });
  const std::string key_pem = pem_of([&](BIO* b) {
    return PEM_write_bio_PrivateKey(b, keys->key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  });
  if (Status s = write_file_atomically(key_path, key_pem); !s) return s;
  if (Status s = write_file_atomically(cert_path, cert_pem); !s) return s;
  log_info("created the device CA in " + options.dir + " (ca.pem, ca.key)");
  return std::unique_ptr<DeviceCa>(new DeviceCa(options, std::move(keys), cert_pem));
}

Result<IssuedCertificate> DeviceCa::certify(const std::string& device_id, void* public_key) const {
  auto* pub = static_cast<EVP_PKEY*>(public_key);
  Cert cert(X509_new());
  X509* c = cert.get();
  IssuedCertificate out;
  if (!c || X509_set_version(c, 2) != 1 || !random_serial(c, out.serial)) {
    return failed("creating a certificate");
  }
  X509_gmtime_adj(X509_getm_notBefore(c), -3600);
  X509_gmtime_adj(X509_getm_notAfter(c), kTenYearsS);
  X509_NAME* name = X509_get_subject_name(c);
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(device_id.data()),
                                 static_cast<int>(device_id.size()), -1, 0) != 1) {
    return failed("naming the certificate");
  }
  X509_set_issuer_name(c, X509_get_subject_name(keys_->cert.get()));
  X509_set_pubkey(c, pub);
  if (!add_extension(c, keys_->cert.get(), NID_basic_constraints, "critical,CA:FALSE") ||
      !add_extension(c, keys_->cert.get(), NID_key_usage, "critical,digitalSignature") ||
      !add_extension(c, keys_->cert.get(), NID_ext_key_usage, "clientAuth") ||
      X509_sign(c, keys_->key.get(), EVP_sha256()) == 0) {
    return failed("signing the certificate");
  }
  out.certificate_pem = pem_of([&](BIO* b) { return PEM_write_bio_X509(b, c); });
  out.ca_pem = ca_pem_;
  return out;
}

Result<IssuedCertificate> DeviceCa::issue(const std::string& device_id) const {
  Key key = new_key();
  if (!key) return failed("generating a device key");
  auto out = certify(device_id, key.get());
  if (!out) return out;
  out->private_key_pem = pem_of([&](BIO* b) {
    return PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  });
  return out;
}

Result<IssuedCertificate> DeviceCa::sign(const std::string& device_id,
                                         const std::string& csr_pem) const {
  Bio bio(BIO_new_mem_buf(csr_pem.data(), static_cast<int>(csr_pem.size())));
  Req req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) {
    ERR_clear_error();
    return Status(StatusCode::kInvalidArgument,
                  "certificate.csr is not a PEM certificate signing request "
                  "(-----BEGIN CERTIFICATE REQUEST-----)");
  }
  EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
  if (pub == nullptr || X509_REQ_verify(req.get(), pub) != 1) {
    ERR_clear_error();
    return Status(StatusCode::kInvalidArgument,
                  "the CSR's signature does not verify with its own public key");
  }
  const std::string cn = common_name(X509_REQ_get_subject_name(req.get()));
  if (cn != device_id) {
    return Status(StatusCode::kInvalidArgument,
                  "the CSR's subject CN is '" + cn.substr(0, 128) +
                      "'; it must be the device id '" + device_id +
                      "' (Mosquitto takes the CN as the device's username)");
  }
  return certify(device_id, pub);
}

Status DeviceCa::write_crl(const std::vector<RevokedCertificate>& revoked) const {
  Crl crl(X509_CRL_new());
  if (!crl || X509_CRL_set_version(crl.get(), 1) != 1 ||
      X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(keys_->cert.get())) != 1) {
    return failed("creating the CRL");
  }
  ASN1_TIME* now = X509_gmtime_adj(nullptr, 0);
  ASN1_TIME* next = X509_gmtime_adj(nullptr, kTenYearsS);  // rewritten at every change
  X509_CRL_set1_lastUpdate(crl.get(), now);
  X509_CRL_set1_nextUpdate(crl.get(), next);
  ASN1_TIME_free(now);
  ASN1_TIME_free(next);
  for (const RevokedCertificate& r : revoked) {
    BIGNUM* raw = nullptr;
    if (BN_hex2bn(&raw, r.serial.c_str()) == 0) continue;
    Num n(raw);
    X509_REVOKED* entry = X509_REVOKED_new();
    ASN1_INTEGER* serial = BN_to_ASN1_INTEGER(n.get(), nullptr);
    ASN1_TIME* at = ASN1_TIME_set(nullptr, static_cast<time_t>(r.revoked_at_s));
    X509_REVOKED_set_serialNumber(entry, serial);
    X509_REVOKED_set_revocationDate(entry, at);
    ASN1_INTEGER_free(serial);
    ASN1_TIME_free(at);
    X509_CRL_add0_revoked(crl.get(), entry);
  }
  X509_CRL_sort(crl.get());
  if (X509_CRL_sign(crl.get(), keys_->key.get(), EVP_sha256()) == 0) {
    return failed("signing the CRL");
  }
  const std::string pem = pem_of([&](BIO* b) { return PEM_write_bio_X509_CRL(b, crl.get()); });
  return write_file_atomically(crl_file(), pem);
}

}  // namespace doppel::gateway
