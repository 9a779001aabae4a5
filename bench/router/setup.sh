# Sourced by run.sh and profile.sh (with $work set and a `pids` array): picks free ports,
# starts the four track backends (one nginx worker on core 1, each answering with its track in
# X-Track) and writes $work/haproxy.cfg, the seed's shape, which HAProxy and `cohort router
# --haproxy-config` both read.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A port
for t in internal canary paid production; do port[$t]=$(free_port); done
p_haproxy=$(free_port); p_cohort=$(free_port); p_admin=$(free_port)
p_mirror=$(free_port); p_mirror_admin=$(free_port)
p_hyper=$(free_port); p_hyper_admin=$(free_port)

# --- backends: one nginx, one worker, on the load core (1) -------------------------------
{
    echo "worker_processes 1; pid $work/nginx.pid; error_log $work/nginx.err; daemon off;"
    echo "events { worker_connections 4096; }"
    echo "http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;"
    for t in internal canary paid production; do
        echo "  server { listen 127.0.0.1:${port[$t]} reuseport; location / { add_header X-Track $t; return 200 'ok'; } }"
    done
    echo "}"
} > "$work/nginx.conf"
taskset -c 1 nginx -c "$work/nginx.conf" -p "$work" & pids+=($!)

# --- HAProxy with the seed's shape, one thread -------------------------------------------
cat > "$work/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 5000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend account-service
    bind 127.0.0.1:$p_haproxy
    acl trusted_peer src 127.0.0.0/8
    http-request del-header X-Traffic-Group if !trusted_peer
    acl is_internal hdr(X-Traffic-Group) -m str -i INTERNAL
    acl is_free hdr(X-Traffic-Group) -m str -i FREE
    acl is_enterprise hdr(X-Traffic-Group) -m str -i ENTERPRISE
    use_backend internal if is_internal
    use_backend free if is_free
    use_backend enterprise if is_enterprise
    default_backend everyone
backend internal
    balance roundrobin
    server internal 127.0.0.1:${port[internal]} check inter 2000
backend free
    balance roundrobin
    server canary 127.0.0.1:${port[canary]} check inter 2000 weight 5
    server production 127.0.0.1:${port[production]} check inter 2000 weight 95
backend enterprise
    balance roundrobin
    server production 127.0.0.1:${port[production]} check inter 2000
backend everyone
    balance roundrobin
    server paid 127.0.0.1:${port[paid]} check inter 2000 weight 5
    server production 127.0.0.1:${port[production]} check inter 2000 weight 95
CFG

# --- the same routing as router.yaml, with 5% of FREE's production requests mirrored to internal
cat > "$work/router-mirror.yaml" <<YAML
service: account-service
trusted_peers: [127.0.0.0/8]
tracks:
  - {name: internal, version: 1.18.0, backends: ["127.0.0.1:${port[internal]}"]}
  - {name: canary, version: 1.17.0, backends: ["127.0.0.1:${port[canary]}"]}
  - {name: paid, version: 1.15.0, backends: ["127.0.0.1:${port[paid]}"]}
  - {name: production, version: 1.15.0, backends: ["127.0.0.1:${port[production]}"]}
cohorts:
  - {cohort: INTERNAL, weights: [{track: internal, weight: 100%}]}
  - {cohort: FREE, weights: [{track: canary, weight: 5%}, {track: production, weight: 95%}]}
  - {cohort: ENTERPRISE, weights: [{track: production, weight: 100%}]}
default_route:
  weights: [{track: paid, weight: 5%}, {track: production, weight: 95%}]
mirrors:
  - {cohort: FREE, from: production, to: internal, share: 5%, max_body: 65536}
YAML
