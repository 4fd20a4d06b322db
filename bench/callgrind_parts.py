#!/usr/bin/env python3
# Groups one callgrind dump's instructions (self cost, by function) into the
# parts of a request: HTTP, token, SQL and decoding, JSON, logging, allocator...
#
#   node bench/run.mjs --no-build --scenarios callgrind --callgrind-requests 200 --keep
#   python3 bench/callgrind_parts.py /tmp/todo-bench-XXXX/callgrind.out.PID.2 200
#
# (dump .2 is the list request; 200 = requests in the dump). The rules are
# name patterns, first match wins: approximate, but the same for every build.
import re, subprocess, sys, collections
f = sys.argv[1]; n = int(sys.argv[2])
out=subprocess.run(['callgrind_annotate','--inclusive=no','--threshold=100',f],capture_output=True,text=True).stdout
rules=[
 ('memcpy/memmove/memset (libc, all parts)', r'memmove|memcpy|memset|memcmp|strlen'),
 ('allocator (mimalloc after, glibc before)', r'\b_?mi_|mimalloc|malloc\.c|arena\.c|__rdl_alloc|__rust_alloc|__rust_dealloc'),
 ('JSON body (serde_json)', r'todo_api::models::output|itoa|ryu|serde_json|serde_core::ser'),
 ('token (SHA-256 digest, cache, claims)', r'sha2|todo_api::auth|jsonwebtoken|ed25519|curve25519|base64|moka|quick_cache'),
 ('SQL build + driver protocol + decoding', r'sqlx|tokio_postgres|postgres_protocol|postgres_types|deadpool|sea_orm|sea_query|todo_api::store|todo_api::db|chrono|from_utf8|time::'),
 ('logging (tracing, our log line)', r'tracing|todo_api::http::log|log_line|fmt::write|core::fmt'),
 ('HTTP (hyper, axum, tower, our layers)', r'hyper|axum|tower|http::|httparse|todo_api::http|todo_api::routes|todo_api::limits|h1|bytes::|matchit|percent_encoding|form_urlencoded|serde_urlencoded|cors'),
 ('async runtime (tokio, futures)', r'tokio|futures|async_stream|mio|parking_lot|std::sync|core::task'),
 ('kernel entry stubs, libc syscalls', r'libc\.so|syscall|__GI_|epoll|recv|send|write|read'),
]
tot=collections.Counter(); total=0; unmatched=collections.Counter()
for line in out.splitlines():
    m=re.match(r'\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)',line)
    if not m or 'PROGRAM TOTALS' in line: 
        m2=re.match(r'\s*([\d,]+) \(100.0%\)\s+PROGRAM TOTALS',line)
        if m2: total=int(m2.group(1).replace(',',''))
        continue
    ir=int(m.group(1).replace(',','')); name=m.group(2)
    for cat,rx in rules:
        if re.search(rx,name): tot[cat]+=ir; break
    else: tot['other']+=ir; unmatched[name[:120]]+=ir
for cat,_ in rules+[('other','')]:
    print(f"{cat:45} {tot[cat]/n:>9,.0f}  {100*tot[cat]/total:5.1f}%")
print('total/request', total/n)
print('largest unmatched:')
for k, v in unmatched.most_common(8):
    print('   ', v // n, k)
