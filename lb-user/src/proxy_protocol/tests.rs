//! Tests for proxy_protocol.rs.
use super::*;
use std::mem::discriminant;
use tokio::io::{duplex, AsyncWriteExt, DuplexStream};
use ProxyProtoError as E;

const T: Duration = Duration::from_secs(5);

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// Writes `input` to a fresh duplex (writer kept open) and runs `accept` on the other end.
async fn run(input: &[u8]) -> (Result<(Option<ProxyAddrs>, Bytes), E>, DuplexStream) {
    let (mut client, server) = duplex(8192);
    client.write_all(input).await.expect("write");
    let res = accept(server, T).await.map(|(a, s)| (a, s.into_parts().0));
    (res, client)
}

async fn assert_err(input: &[u8], want: E) {
    let got = run(input).await.0.map(|(a, _)| a);
    let ok = matches!(&got, Err(e) if discriminant(e) == discriminant(&want));
    let input = String::from_utf8_lossy(input);
    assert!(ok, "{input:?}: got {got:?}, want {want}");
}

#[tokio::test]
async fn round_trip_v1_v2_all_families() {
    for case in [
        "1.2.3.4:5 10.0.0.1:65535 1.2.3.4:5 10.0.0.1:65535",
        "[2001:db8::1]:0 [::1]:443 [2001:db8::1]:0 [::1]:443",
        "1.2.3.4:80 [::1]:443 [::ffff:1.2.3.4]:80 [::1]:443",
        "[fe80::1]:1 9.8.7.6:2 [fe80::1]:1 [::ffff:9.8.7.6]:2",
    ] {
        let a: Vec<SocketAddr> = case.split(' ').map(sa).collect();
        let want = ProxyAddrs::new(a[2], a[3]);
        for hdr in [encode_v1(a[0], a[1]), encode_v2(a[0], a[1])] {
            let got = run(&hdr).await.0.expect("accept");
            assert_eq!(got, (Some(want), Bytes::new()), "{case} {hdr:?}");
        }
    }
    let max = sa("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
    assert_eq!(encode_v1(max, max).len(), 104);
    let mixed = (sa("1.2.3.4:80"), sa("[::1]:443"));
    assert_eq!(&encode_v1(mixed.0, mixed.1)[..11], b"PROXY TCP6 ");
    assert_eq!(encode_v2(mixed.0, mixed.1)[12..16], [0x21, 0x21, 0, 36]);
    assert_eq!(encode_v2(mixed.0, mixed.0)[12..16], [0x21, 0x11, 0, 12]);
}

#[tokio::test]
async fn leftover_bytes_come_through_prefixed() {
    let (src, dst) = (sa("1.2.3.4:1"), sa("5.6.7.8:2"));
    for mut hdr in [encode_v1(src, dst), encode_v2(src, dst)] {
        let (mut client, server) = duplex(8192);
        hdr.extend_from_slice(b"GET / HTTP/1.1\r\n");
        client.write_all(&hdr).await.expect("write");
        let (addrs, mut s) = accept(server, T).await.expect("accept");
        assert_eq!(addrs.expect("addrs").source, src);
        assert_eq!(s.prefix, Bytes::from_static(b"GET / HTTP/1.1\r\n"));
        client.write_all(b"Host: x\r\n").await.expect("write");
        client.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest, b"GET / HTTP/1.1\r\nHost: x\r\n");
        s.write_all(b"pong").await.expect("write through");
        let mut pong = [0u8; 4];
        client.read_exact(&mut pong).await.expect("read pong");
        assert_eq!(&pong, b"pong");
        assert!(s.into_parts().0.is_empty());
    }
}

#[tokio::test]
async fn header_split_into_one_byte_writes() {
    let (src, dst) = (sa("[::1]:7"), sa("[::2]:8"));
    for hdr in [encode_v1(src, dst), encode_v2(src, dst)] {
        let (mut client, server) = duplex(1); // the reader sees one byte per read
        let writer = tokio::spawn(async move {
            for b in hdr.iter().chain(b"hi") {
                client.write_all(&[*b]).await.expect("write");
                tokio::task::yield_now().await;
            }
        });
        let (addrs, mut s) = accept(server, T).await.expect("accept");
        assert_eq!(addrs.expect("addrs").destination, dst);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest, b"hi");
        writer.await.expect("writer");
    }
}

#[tokio::test]
async fn unknown_local_unspec_unix_give_none_and_tlvs_are_skipped() {
    let v2 = |tail: &[u8]| [&V2_SIG[..], tail, b"Z"].concat();
    let mut unix = [0x21, 0x31, 0, 216].to_vec();
    unix.resize(4 + 216, b'/');
    let mut tlv = encode_v2(sa("1.2.3.4:1"), sa("5.6.7.8:2"));
    tlv[15] += 5;
    tlv.extend_from_slice(&[0x04, 0, 2, 9, 9, b'Z']); // a NOOP TLV
    for (input, want_some) in [
        (b"PROXY UNKNOWN\r\nZ".to_vec(), false),
        (b"PROXY UNKNOWN ffff::1 whatever 1 2\r\nZ".to_vec(), false),
        (v2(&[0x20, 0x11, 0, 3, 1, 2, 3]), false), // LOCAL: block ignored
        (v2(&[0x21, 0x00, 0, 0]), false),
        (v2(&unix), false),
        (tlv, true),
    ] {
        let (addrs, left) = run(&input).await.0.expect("accept");
        assert_eq!(addrs.is_some(), want_some, "{input:?}");
        assert_eq!(left, Bytes::from_static(b"Z"), "{input:?}");
    }
}

#[tokio::test]
async fn malformed_v1_rejected() {
    for line in [
        "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
        "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 ::1 ::2 1 2\r\n",
        "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 22\n",
        "PROXY UNKNOWN\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
        "PROXY \r\n",
    ] {
        assert_err(line.as_bytes(), E::V1Malformed("")).await;
    }
    let mut no_crlf = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2".to_vec();
    no_crlf.resize(V1_MAX, b' ');
    assert_err(&no_crlf, E::V1TooLong).await;
    let late = format!("PROXY TCP4 1.2.3.4 5.6.7.8 1 2{}\r\n", " ".repeat(80));
    assert_err(late.as_bytes(), E::V1TooLong).await;
}

#[tokio::test]
async fn malformed_v2_rejected() {
    let v2 = |ver_cmd: u8, fam: u8, len: u16| {
        let mut h = [&V2_SIG[..], &[ver_cmd, fam], &len.to_be_bytes()].concat();
        h.resize(V2_FIXED + usize::from(len).min(64), 0);
        h
    };
    for (input, want) in [
        (v2(0x11, 0x11, 12), E::V2Unsupported(0)), // version 1
        (v2(0x31, 0x11, 12), E::V2Unsupported(0)), // version 3
        (v2(0x22, 0x11, 12), E::V2Unsupported(0)), // command 2
        (v2(0x21, 0x11, 4097), E::V2TooLong(0)),
        (v2(0x20, 0x00, 0xffff), E::V2TooLong(0)),
        (v2(0x21, 0x11, 11), E::V2ShortAddr),
        (v2(0x21, 0x21, 12), E::V2ShortAddr),
        (v2(0x21, 0x31, 36), E::V2ShortAddr),
        (v2(0x21, 0x41, 12), E::V2Family(0)),
        (v2(0x21, 0x01, 0), E::V2Family(0)),
    ] {
        assert_err(&input, want).await;
    }
}

#[tokio::test]
async fn garbage_fails_fast_without_waiting() {
    for input in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"G",
        b"\r\n\r\n\0\r\nQUIX",
        b"\x16\x03\x01\x02\x00",
    ] {
        let fast = tokio::time::timeout(Duration::from_secs(2), assert_err(input, E::NotProxy));
        fast.await.expect("must not wait for more bytes");
    }
}

#[tokio::test]
async fn partial_prefix_then_stall_times_out() {
    let v2 = encode_v2(sa("1.2.3.4:1"), sa("5.6.7.8:2"));
    for input in [&b"PROXY TCP4 1.2"[..], b"PRO", &v2[..5], &v2[..20], b""] {
        let (mut client, server) = duplex(8192);
        client.write_all(input).await.expect("write");
        let start = std::time::Instant::now();
        let res = accept(server, Duration::from_millis(100)).await;
        assert!(matches!(res, Err(E::Timeout)), "{input:?}");
        assert!(start.elapsed() >= Duration::from_millis(90));
        drop(client);
    }
    let (mut client, server) = duplex(8192);
    client.write_all(b"PROXY TCP4 1.2").await.expect("write");
    drop(client); // peer closing mid-header is a distinct error
    assert!(matches!(accept(server, T).await, Err(E::Eof)));
}

#[tokio::test]
async fn fuzz_no_panic() {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (seed >> 33) as u32
    };
    let [a, b, c, d] = ["1.2.3.4:80", "5.6.7.8:9", "[::1]:8", "[1::]:9"].map(sa);
    let seeds = [encode_v1(a, b), encode_v1(c, d), encode_v2(a, b)];
    let (mut oks, mut errs) = (0, 0);
    for i in 0..2000 {
        let mut input = seeds[i % 3].clone();
        if i % 4 == 0 {
            input = (0..next() % 160).map(|_| next() as u8).collect();
        }
        for _ in 0..next() % 3 {
            if let Some(b) = input.get_mut(next() as usize % 128) {
                *b = next() as u8;
            }
        }
        input.truncate(next() as usize % 256);
        for k in 0..input.len() {
            let _ = parse(&input[..k]); // every prefix state, synchronously
        }
        let (mut client, server) = duplex(8192);
        client.write_all(&input).await.expect("write");
        drop(client); // EOF instead of a stall
        match accept(server, T).await {
            Ok((addrs, s)) => {
                oks += 1;
                let same = matches!(parse(&input), Ok(Parse::Done(a, _)) if a == addrs);
                assert!(same, "{input:?}");
                assert!(s.into_parts().0.len() < input.len());
            }
            Err(E::Timeout) => panic!("closed stream must not time out: {input:?}"),
            Err(_) => errs += 1,
        }
    }
    assert!(oks > 100 && errs > 500, "oks {oks} errs {errs}");
}
