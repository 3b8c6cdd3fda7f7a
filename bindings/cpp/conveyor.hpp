// conveyor.hpp: a header-only C++17 RAII wrapper over the conveyor C API (conveyor.h).
//
//   conveyor::Config config;
//   config.set("mode", "loadbalance").set("max_retries", "-1");
//   config.add_client([](const conveyor::Events& events) {
//     for (std::string_view e : events) send(e);
//     return conveyor::Published::all(events.size());
//   });
//   conveyor::Pipeline pipeline(std::move(config));
//   conveyor::Producer producer = pipeline.producer({[](uint64_t n) { acked += n; }});
//   producer.publish("hello");
//   pipeline.flush(std::chrono::seconds(5));
//
// Errors are thrown as conveyor::Error, carrying the C status code and the detail of
// conveyor_last_error(). Clients are classes deriving from conveyor::Client or
// conveyor::AsyncClient, or lambdas; conveyor owns them once added and deletes each
// exactly once. Exceptions never cross into conveyor: an exception from a client
// callback is a failed call (conveyor::Retry: a temporary failure on a working
// connection; anything else: a broken connection), and an exception from a producer
// or log callback is swallowed (the outcome still counts). The thread rules are those
// of conveyor.h: client callbacks run on conveyor's worker threads, never concurrently
// for the same client; producer callbacks on the pipeline's dispatcher thread.
#ifndef CONVEYOR_HPP
#define CONVEYOR_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "conveyor.h"

namespace conveyor {

/// A failed conveyor call: the CONVEYOR_ERR_* code and conveyor's message.
class Error : public std::runtime_error {
 public:
  Error(conveyor_result code, const std::string &message)
      : std::runtime_error(message), code_(code) {}
  /// The CONVEYOR_ERR_* status of the failed call.
  conveyor_result code() const noexcept { return code_; }

 private:
  conveyor_result code_;
};

/// Thrown by a client's publish: a temporary failure, the connection is fine.
struct Retry : std::runtime_error {
  explicit Retry(const std::string &why = "retry") : std::runtime_error(why) {}
};

/// Timeouts are milliseconds; `forever` waits without limit.
using Millis = std::chrono::milliseconds;
inline constexpr Millis forever = Millis::max();

/// The library version at run time, "MAJOR.MINOR.PATCH".
inline std::string version() { return conveyor_version(); }

namespace detail {

inline std::string last_error() {
  std::size_t n = conveyor_last_error(nullptr, 0);
  std::string text(n + 1, '\0');
  conveyor_last_error(&text[0], text.size());
  text.resize(n);
  return text;
}

inline void check(conveyor_result r) {
  if (r != CONVEYOR_OK) {
    throw Error(r, last_error());
  }
}

inline uint64_t to_ms(Millis t) {
  if (t == forever) {
    return UINT64_MAX;
  }
  return t.count() < 0 ? 0 : static_cast<uint64_t>(t.count());
}

inline std::string_view view(const conveyor_bytes &b) {
  return std::string_view(reinterpret_cast<const char *>(b.data), b.len);
}

}  // namespace detail

/// A read-only view of a batch of events, valid only as long as the callback (or,
/// for AsyncClient, until its Completion is done) says.
class Events {
 public:
  class iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = std::string_view;
    using difference_type = std::ptrdiff_t;
    using pointer = const std::string_view *;
    using reference = std::string_view;
    explicit iterator(const conveyor_bytes *p) : p_(p) {}
    std::string_view operator*() const { return detail::view(*p_); }
    iterator &operator++() {
      ++p_;
      return *this;
    }
    iterator operator++(int) {
      iterator old = *this;
      ++p_;
      return old;
    }
    bool operator==(const iterator &o) const { return p_ == o.p_; }
    bool operator!=(const iterator &o) const { return p_ != o.p_; }

   private:
    const conveyor_bytes *p_;
  };

  Events(const conveyor_bytes *events, std::size_t n) : events_(events), n_(n) {}
  std::size_t size() const noexcept { return n_; }
  bool empty() const noexcept { return n_ == 0; }
  std::string_view operator[](std::size_t i) const { return detail::view(events_[i]); }
  iterator begin() const { return iterator(events_); }
  iterator end() const { return iterator(events_ + n_); }
  /// The underlying C views.
  const conveyor_bytes *data() const noexcept { return events_; }

 private:
  const conveyor_bytes *events_;
  std::size_t n_;
};

/// Publish outcome: the first `count` events went out, then `status`.
enum class Status : uint32_t {
  ok = CONVEYOR_PUBLISH_OK,
  retry = CONVEYOR_PUBLISH_RETRY,
  broken = CONVEYOR_PUBLISH_BROKEN,
};

struct Published {
  std::size_t count;
  Status status;
  static Published all(std::size_t n) { return {n, Status::ok}; }
  static Published retry(std::size_t n) { return {n, Status::retry}; }
  static Published broken(std::size_t n = 0) { return {n, Status::broken}; }
};

/// What clients share: connect (throw = failed connect) and close.
class ClientBase {
 public:
  virtual ~ClientBase() = default;
  /// Opens the connection; throwing means the connect failed (retried after a backoff).
  virtual void connect(Millis timeout) { (void)timeout; }
  /// Closes the connection; also called when never connected.
  virtual void close() {}
};

/// A synchronous client.
class Client : public ClientBase {
 public:
  /// Publishes a prefix of `events` (views valid during the call). Throwing Retry is a
  /// temporary failure; any other exception means the connection is broken.
  virtual Published publish(const Events &events) = 0;
};

/// Completes one asynchronous publish, exactly once, from any thread. Destroying it
/// without calling done() reports the batch as not published (a broken connection),
/// so no batch is ever stranded.
class Completion {
 public:
  explicit Completion(conveyor_completion *c) noexcept : c_(c) {}
  Completion(Completion &&o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  Completion &operator=(Completion &&o) noexcept {
    if (this != &o) {
      finish(Published::broken());
      c_ = std::exchange(o.c_, nullptr);
    }
    return *this;
  }
  Completion(const Completion &) = delete;
  Completion &operator=(const Completion &) = delete;
  ~Completion() { finish(Published::broken()); }
  /// Reports the outcome; later calls do nothing.
  void done(Published p) noexcept { finish(p); }

 private:
  void finish(Published p) noexcept {
    if (c_ != nullptr) {
      conveyor_completion_done(std::exchange(c_, nullptr), p.count, static_cast<uint32_t>(p.status));
    }
  }
  conveyor_completion *c_;
};

/// An asynchronous client: publish_async starts the work and the Completion reports
/// it later. `events` stays valid until the completion is done or the client is
/// deleted. Throwing from publish_async completes the batch as broken.
class AsyncClient : public ClientBase {
 public:
  virtual void publish_async(Events events, Completion completion) = 0;
};

namespace detail {

extern "C" {

inline uint32_t conveyor_hpp_connect(void *userdata, uint64_t timeout_ms) noexcept {
  try {
    auto ms = timeout_ms > static_cast<uint64_t>(Millis::max().count())
                  ? Millis::max()
                  : Millis(static_cast<Millis::rep>(timeout_ms));
    static_cast<ClientBase *>(userdata)->connect(ms);
    return 0;
  } catch (...) {
    return 1;
  }
}

inline void conveyor_hpp_close(void *userdata) noexcept {
  try {
    static_cast<ClientBase *>(userdata)->close();
  } catch (...) {
    // close cannot fail from conveyor's point of view.
  }
}

inline uint32_t conveyor_hpp_publish(void *userdata, const conveyor_bytes *events, std::size_t n,
                                     std::size_t *published) noexcept {
  try {
    Published p = static_cast<Client *>(static_cast<ClientBase *>(userdata))->publish(Events(events, n));
    *published = p.count;
    return static_cast<uint32_t>(p.status);
  } catch (const Retry &) {
    return CONVEYOR_PUBLISH_RETRY;
  } catch (...) {
    return CONVEYOR_PUBLISH_BROKEN;
  }
}

inline uint32_t conveyor_hpp_publish_async(void *userdata, const conveyor_bytes *events, std::size_t n,
                                           conveyor_completion *completion) noexcept {
  try {
    static_cast<AsyncClient *>(static_cast<ClientBase *>(userdata))
        ->publish_async(Events(events, n), Completion(completion));
  } catch (...) {
    // The Completion, destroyed while unwinding (unless moved away), reported it broken.
  }
  return 0;
}

inline void conveyor_hpp_free_client(void *userdata) noexcept {
  delete static_cast<ClientBase *>(userdata);
}

}  // extern "C"

/// A vtable over `client`; the caller releases the pointer only once conveyor took it.
inline conveyor_client_vtable vtable_for(ClientBase *client) {
  conveyor_client_vtable vt{};
  vt.struct_size = static_cast<uint32_t>(sizeof vt);
  vt.userdata = client;
  vt.connect = conveyor_hpp_connect;
  vt.close = conveyor_hpp_close;
  vt.free_userdata = conveyor_hpp_free_client;
  if (dynamic_cast<AsyncClient *>(client) != nullptr) {
    vt.publish_async = conveyor_hpp_publish_async;
  } else if (dynamic_cast<Client *>(client) != nullptr) {
    vt.publish = conveyor_hpp_publish;
  }
  return vt;
}

/// A client from a publish function.
template <class F>
class FunctionClient : public Client {
 public:
  explicit FunctionClient(F f) : f_(std::move(f)) {}
  Published publish(const Events &events) override { return f_(events); }

 private:
  F f_;
};

template <class F>
using if_publish_fn = std::enable_if_t<std::is_invocable_r_v<Published, F &, const Events &>, int>;

using Factory = std::function<std::unique_ptr<ClientBase>(const std::string &host)>;
using LogFn = std::function<void(uint32_t level, std::string_view message)>;

/// State C keeps pointers to for the pipeline's whole life (factories, logger).
struct Keepalive {
  std::vector<std::unique_ptr<Factory>> factories;
  std::unique_ptr<LogFn> logger;
};

extern "C" {

inline uint32_t conveyor_hpp_factory(void *userdata, const char *host, conveyor_client_vtable *out) noexcept {
  try {
    std::unique_ptr<ClientBase> client = (*static_cast<Factory *>(userdata))(host);
    if (!client) {
      return 1;
    }
    *out = vtable_for(client.get());
    client.release();
    return 0;
  } catch (...) {
    return 1;
  }
}

inline void conveyor_hpp_log(void *userdata, uint32_t level, const char *message, std::size_t len) noexcept {
  try {
    (*static_cast<LogFn *>(userdata))(level, std::string_view(message, len));
  } catch (...) {
    // A logger that throws loses that message only.
  }
}

}  // extern "C"

}  // namespace detail

/// The settings and clients of a pipeline to build. Move-only.
class Config {
 public:
  Config() : raw_(conveyor_config_new()), keep_(std::make_shared<detail::Keepalive>()) {
    if (raw_ == nullptr) {
      throw Error(CONVEYOR_ERR_INTERNAL, detail::last_error());
    }
  }
  Config(Config &&o) noexcept : raw_(std::exchange(o.raw_, nullptr)), keep_(std::move(o.keep_)) {}
  Config &operator=(Config &&o) noexcept {
    if (this != &o) {
      conveyor_config_free(raw_);
      raw_ = std::exchange(o.raw_, nullptr);
      keep_ = std::move(o.keep_);
    }
    return *this;
  }
  Config(const Config &) = delete;
  Config &operator=(const Config &) = delete;
  ~Config() { conveyor_config_free(raw_); }

  /// Sets a key (see the README's table), e.g. set("backoff.init", "250ms").
  Config &set(const std::string &key, const std::string &value) {
    detail::check(conveyor_config_set(raw_, key.c_str(), value.c_str()));
    return *this;
  }

  /// The value of a key, as set() takes it.
  std::string get(const std::string &key) const {
    std::size_t needed = 0;
    std::string value(32, '\0');
    conveyor_result r = conveyor_config_get(raw_, key.c_str(), &value[0], value.size(), &needed);
    if (r == CONVEYOR_ERR_BUFFER_TOO_SMALL) {
      value.assign(needed, '\0');
      r = conveyor_config_get(raw_, key.c_str(), &value[0], value.size(), &needed);
    }
    detail::check(r);
    value.resize(needed - 1);
    return value;
  }

  /// Adds a client; conveyor owns it from now on (it stays yours if this throws).
  Config &add_client(std::unique_ptr<ClientBase> client) {
    conveyor_client_vtable vt = detail::vtable_for(client.get());
    detail::check(conveyor_config_add_client(raw_, &vt));
    client.release();
    return *this;
  }

  /// Adds a synchronous client from a function `Published(const Events&)`.
  template <class F, detail::if_publish_fn<F> = 0>
  Config &add_client(F publish) {
    return add_client(std::make_unique<detail::FunctionClient<F>>(std::move(publish)));
  }

  /// Adds hosts whose clients `factory` builds (returning nullptr or throwing fails).
  Config &add_hosts(const std::vector<std::string> &hosts, detail::Factory factory) {
    auto f = std::make_unique<detail::Factory>(std::move(factory));
    std::vector<const char *> names;
    for (const std::string &h : hosts) {
      names.push_back(h.c_str());
    }
    detail::check(conveyor_config_add_hosts(raw_, names.data(), names.size(), detail::conveyor_hpp_factory,
                                            f.get()));
    keep_->factories.push_back(std::move(f));
    return *this;
  }

  /// Receives the pipeline's log messages (level: CONVEYOR_LOG_*), from any thread.
  Config &set_logger(detail::LogFn logger) {
    auto f = std::make_unique<detail::LogFn>(std::move(logger));
    detail::check(conveyor_config_set_logger(raw_, detail::conveyor_hpp_log, f.get()));
    keep_->logger = std::move(f);
    return *this;
  }

  /// The C handle (still owned by this object).
  conveyor_config *get() const noexcept { return raw_; }

 private:
  friend class Pipeline;
  conveyor_config *raw_;
  std::shared_ptr<detail::Keepalive> keep_;
};

/// How a producer hears about its events. Callbacks run on the dispatcher thread.
struct ProducerOptions {
  /// `count` more events acknowledged, in publish order.
  std::function<void(uint64_t count)> on_ack;
  /// Events conveyor gave up on (views valid during the call).
  std::function<void(const Events &events)> on_drop;
  /// Never drop for delivery failures (only close or cancel can).
  bool guaranteed = false;
  /// cancel() removes events no client has taken yet.
  bool drop_on_cancel = false;
};

namespace detail {

struct ProducerCallbacks {
  std::function<void(uint64_t)> on_ack;
  std::function<void(const Events &)> on_drop;
};

extern "C" {

inline void conveyor_hpp_on_ack(void *userdata, uint64_t count) noexcept {
  try {
    static_cast<ProducerCallbacks *>(userdata)->on_ack(count);
  } catch (...) {
    // The ACK is counted whatever the callback does.
  }
}

inline void conveyor_hpp_on_drop(void *userdata, const conveyor_bytes *events, std::size_t n) noexcept {
  try {
    static_cast<ProducerCallbacks *>(userdata)->on_drop(Events(events, n));
  } catch (...) {
    // The drop is counted whatever the callback does.
  }
}

inline void conveyor_hpp_free_callbacks(void *userdata) noexcept {
  delete static_cast<ProducerCallbacks *>(userdata);
}

}  // extern "C"

}  // namespace detail

/// A producer. Thread-safe; move-only; must not outlive its Pipeline object.
class Producer {
 public:
  Producer(Producer &&o) noexcept : raw_(std::exchange(o.raw_, nullptr)) {}
  Producer &operator=(Producer &&o) noexcept {
    if (this != &o) {
      conveyor_producer_free(raw_);
      raw_ = std::exchange(o.raw_, nullptr);
    }
    return *this;
  }
  Producer(const Producer &) = delete;
  Producer &operator=(const Producer &) = delete;
  ~Producer() { conveyor_producer_free(raw_); }

  /// Publishes one event (copied), waiting up to `timeout` for room.
  void publish(std::string_view event, Millis timeout = forever) {
    detail::check(conveyor_producer_publish(raw_, reinterpret_cast<const uint8_t *>(event.data()), event.size(),
                                            detail::to_ms(timeout)));
  }

  /// Publishes one event if there is room now; false when the queue is full.
  bool try_publish(std::string_view event) {
    conveyor_result r =
        conveyor_producer_try_publish(raw_, reinterpret_cast<const uint8_t *>(event.data()), event.size());
    if (r == CONVEYOR_ERR_FULL) {
      return false;
    }
    detail::check(r);
    return true;
  }

  /// Publishes events in order; returns how many leading ones were accepted.
  std::size_t publish_batch(const std::vector<std::string_view> &events, Millis timeout = forever) {
    std::vector<conveyor_bytes> views;
    views.reserve(events.size());
    for (std::string_view e : events) {
      views.push_back(conveyor_bytes{reinterpret_cast<const uint8_t *>(e.data()), e.size()});
    }
    std::size_t accepted = 0;
    detail::check(
        conveyor_producer_publish_batch(raw_, views.data(), views.size(), detail::to_ms(timeout), &accepted));
    return accepted;
  }

  /// Publishes events laid end to end in `data` (event i is the next `lens[i]` bytes),
  /// copying whole runs at once; returns how many leading ones were accepted.
  std::size_t publish_packed(std::string_view data, const std::vector<std::uint32_t> &lens,
                             Millis timeout = forever) {
    std::size_t accepted = 0;
    detail::check(conveyor_producer_publish_packed(raw_, reinterpret_cast<const uint8_t *>(data.data()),
                                                   data.size(), lens.data(), lens.size(),
                                                   detail::to_ms(timeout), &accepted));
    return accepted;
  }

  /// Cancels the producer; returns how many untaken events it removed.
  std::size_t cancel() {
    std::size_t removed = 0;
    detail::check(conveyor_producer_cancel(raw_, &removed));
    return removed;
  }

  /// This producer's accounting.
  conveyor_counts counts() const {
    conveyor_counts c{};
    detail::check(conveyor_producer_counts(raw_, &c));
    return c;
  }

  conveyor_producer *get() const noexcept { return raw_; }

 private:
  friend class Pipeline;
  explicit Producer(conveyor_producer *raw) : raw_(raw) {}
  conveyor_producer *raw_;
};

/// A running pipeline. Destroying it closes it with a zero timeout (events not yet
/// delivered are dropped and reported). Move-only; destroy its Producers first.
class Pipeline {
 public:
  /// Builds and starts the pipeline. On success it took `config`'s contents; if this
  /// throws, `config` is unchanged.
  explicit Pipeline(Config &&config) : raw_(nullptr) {
    detail::check(conveyor_pipeline_new(config.raw_, &raw_));
    config.raw_ = nullptr;
    keep_ = std::move(config.keep_);
  }
  Pipeline(Pipeline &&o) noexcept : raw_(std::exchange(o.raw_, nullptr)), keep_(std::move(o.keep_)) {}
  Pipeline &operator=(Pipeline &&o) noexcept {
    if (this != &o) {
      conveyor_pipeline_free(raw_);
      raw_ = std::exchange(o.raw_, nullptr);
      keep_ = std::move(o.keep_);
    }
    return *this;
  }
  Pipeline(const Pipeline &) = delete;
  Pipeline &operator=(const Pipeline &) = delete;
  ~Pipeline() { conveyor_pipeline_free(raw_); }

  /// A new producer.
  Producer producer(ProducerOptions options = {}) {
    auto callbacks = std::make_unique<detail::ProducerCallbacks>();
    conveyor_producer_config pc{};
    pc.struct_size = static_cast<uint32_t>(sizeof pc);
    pc.userdata = callbacks.get();
    if (options.on_ack) {
      callbacks->on_ack = std::move(options.on_ack);
      pc.on_ack = detail::conveyor_hpp_on_ack;
    }
    if (options.on_drop) {
      callbacks->on_drop = std::move(options.on_drop);
      pc.on_drop = detail::conveyor_hpp_on_drop;
    }
    pc.guaranteed = options.guaranteed ? 1 : 0;
    pc.drop_on_cancel = options.drop_on_cancel ? 1 : 0;
    pc.free_userdata = detail::conveyor_hpp_free_callbacks;
    conveyor_producer *raw = nullptr;
    detail::check(conveyor_producer_new(raw_, &pc, &raw));
    callbacks.release();
    return Producer(raw);
  }

  /// Waits until every accepted event has its outcome reported.
  void flush(Millis timeout = forever) { detail::check(conveyor_pipeline_flush(raw_, detail::to_ms(timeout))); }

  /// Closes: delivers what it can within `timeout`, drops and reports the rest.
  conveyor_close_report close(Millis timeout = forever) {
    conveyor_close_report report{};
    detail::check(conveyor_pipeline_close_report(raw_, detail::to_ms(timeout), &report));
    return report;
  }

  /// Every counter, as JSON.
  std::string stats_json() const {
    std::size_t needed = 0;
    std::string json(4096, '\0');
    conveyor_result r;
    while ((r = conveyor_pipeline_stats_json(raw_, &json[0], json.size(), &needed)) ==
           CONVEYOR_ERR_BUFFER_TOO_SMALL) {
      json.assign(needed + 1024, '\0');
    }
    detail::check(r);
    json.resize(needed - 1);
    return json;
  }

  /// Adds a client while running; returns its id (it stays yours if this throws).
  uint64_t add_client(std::unique_ptr<ClientBase> client) {
    conveyor_client_vtable vt = detail::vtable_for(client.get());
    uint64_t id = 0;
    detail::check(conveyor_pipeline_add_client(raw_, &vt, &id));
    client.release();
    return id;
  }

  /// Adds a synchronous client from a function `Published(const Events&)`.
  template <class F, detail::if_publish_fn<F> = 0>
  uint64_t add_client(F publish) {
    return add_client(std::make_unique<detail::FunctionClient<F>>(std::move(publish)));
  }

  /// Removes a client while running (deleted before this returns).
  void remove_client(uint64_t id) { detail::check(conveyor_pipeline_remove_client(raw_, id)); }

  conveyor_pipeline *get() const noexcept { return raw_; }

 private:
  conveyor_pipeline *raw_;
  std::shared_ptr<detail::Keepalive> keep_;
};

}  // namespace conveyor

#endif  // CONVEYOR_HPP
