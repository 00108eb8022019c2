// HttpServer (http_server.h): start (open-file limit, TLS context, listen, the network threads),
// graceful stop, and the blocking pools. Connections are detail/http_session.cc; what both share
// is detail/http_server_impl.h.
#include <sys/resource.h>

#include <boost/asio/post.hpp>

#include "gateway/detail/http_server_impl.h"
#include "twins/log.h"
#include "twins/thread_name.h"

namespace doppel::gateway {

HttpServer::HttpServer(HttpServerOptions options, Handler handler, Metrics& metrics)
    : impl_(std::make_shared<Impl>(std::move(options), std::move(handler), metrics)) {}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::start() {
  Impl& i = *impl_;
  // Every connection is a descriptor: take as many as this process may.
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &nofile);
  }
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    log_info("HTTP: open-file limit " + std::to_string(nofile.rlim_cur) +
             ", --http-max-connections " + std::to_string(i.options.max_connections));
    if (nofile.rlim_cur < i.options.max_connections + 256) {
      log_warn("HTTP: the open-file limit (" + std::to_string(nofile.rlim_cur) +
               ") is below --http-max-connections; raise it (ulimit -n) or lower the flag");
    }
  }
  if (i.options.tls_cert.empty() != i.options.tls_key.empty()) {
    return Status(StatusCode::kInvalidArgument,
                  "--http-tls-cert and --http-tls-key go together (a PEM certificate chain and "
                  "its private key)");
  }
  if (!i.options.tls_cert.empty()) {
    auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                     asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
    beast::error_code tls_ec;
    ctx->use_certificate_chain_file(i.options.tls_cert, tls_ec);
    if (tls_ec) {
      return Status(StatusCode::kInvalidArgument, "cannot use --http-tls-cert " +
                                                      i.options.tls_cert + ": " + tls_ec.message() +
                                                      " (expected PEM)");
    }
    ctx->use_private_key_file(i.options.tls_key, asio::ssl::context::pem, tls_ec);
    if (tls_ec) {
      return Status(StatusCode::kInvalidArgument,
                    "cannot use --http-tls-key " + i.options.tls_key + ": " + tls_ec.message() +
                        " (expected the PEM private key of --http-tls-cert)");
    }
    i.tls = std::move(ctx);
  }
  // Time limits are checked a few times within the shortest of them.
  const auto shortest =
      std::min({i.options.header_timeout, i.options.idle_timeout, i.options.body_timeout});
  i.sweep_every =
      std::clamp(shortest / 8, std::chrono::milliseconds(10), std::chrono::milliseconds(250));
  beast::error_code ec;
  const auto address =
      asio::ip::make_address(i.options.host == "localhost" ? "127.0.0.1" : i.options.host, ec);
  auto fail = [&](const std::string& what) {
    return Status(StatusCode::kUnavailable, "cannot listen for HTTP on " + i.options.host + ":" +
                                                std::to_string(i.options.port) + " (" + what +
                                                "); choose another address with --http");
  };
  if (ec) return fail("not an IP address: " + ec.message());
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(i.options.port));
  i.acceptor.open(endpoint.protocol(), ec);
  if (!ec) i.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) i.acceptor.bind(endpoint, ec);
  if (!ec) i.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail(ec.message());
  i.bound_port = i.acceptor.local_endpoint().port();
  i.accept();
  i.sweep();
  for (int t = 0; t < std::max(1, i.options.threads); ++t) {
    i.threads.emplace_back([&i] {
      name_this_thread("http-io");
      i.ioc.run();
    });
  }
  return Status::ok();
}

void HttpServer::stop(std::chrono::milliseconds grace) {
  Impl& i = *impl_;
  if (i.stopping.exchange(true) || i.threads.empty()) return;
  asio::post(i.ioc, [&i] {
    beast::error_code ec;
    i.acceptor.close(ec);
  });
  // The sweep goes on during the grace period (time limits still apply), until ioc.stop().
  i.close_idle_sessions();
  {
    // In-flight requests finish and close their connections after answering.
    std::unique_lock lock(i.mu);
    i.drained.wait_for(lock, grace, [&i] { return i.sessions.empty(); });
  }
  i.ioc.stop();
  for (auto& t : i.threads) t.join();
  i.threads.clear();
  i.blocking.join();
  i.query_pool.join();
  // Connections still open after the grace period go now, while their io_context exists.
  std::unordered_set<std::shared_ptr<Session>> left;
  {
    std::lock_guard lock(i.mu);
    left.swap(i.sessions);
  }
  left.clear();
}

int HttpServer::port() const { return impl_->bound_port; }

size_t HttpServer::connections() const { return impl_->open.load(); }

size_t HttpServer::streams() const { return impl_->streams.load(); }

void HttpServer::run_blocking(std::function<void()> work, BlockingPool pool) {
  asio::post(pool == BlockingPool::kQuery ? impl_->query_pool : impl_->blocking, std::move(work));
}

}  // namespace doppel::gateway
