//! `voq netem --netns`: the link exists while the command runs, carries TCP with the delay asked
//! for, goes dark on command, and is gone once its standard input closes. Root only; `VOQ_NETNS_REQUIRED=1` (CI) turns
//! a skip into a failure.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

fn namespaces() -> String {
    String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned()
}

#[test]
fn netns_link_carries_tcp_with_its_delay_and_goes_with_its_stdin() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        assert!(
            std::env::var_os("VOQ_NETNS_REQUIRED").is_none(),
            "VOQ_NETNS_REQUIRED=1 but voq netem --netns needs root"
        );
        eprintln!("SKIPPED: voq netem --netns needs root");
        return;
    }
    let mut link = Command::new(env!("CARGO_BIN_EXE_voq"))
        .args(["netem", "--netns", "--delay-ms", "40"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = BufReader::new(link.stdout.take().unwrap());
    let mut line = String::new();
    said.read_line(&mut line).unwrap();
    let ns: serde_json::Value = serde_json::from_str(&line).unwrap();
    let (client, server) = (
        ns["client_ns"].as_str().unwrap().to_owned(),
        ns["server_ns"].as_str().unwrap().to_owned(),
    );
    assert_eq!(ns["server_addr"], "198.18.0.2");
    let listed = namespaces();
    assert!(
        listed.contains(&client) && listed.contains(&server),
        "{listed}"
    );

    // A TCP connection from the client's namespace to a listener in the server's: its handshake
    // takes one round trip of the link (2 × 40 ms).
    let mut listener = Command::new("ip")
        .args(["netns", "exec", &server, "python3", "-c"])
        .arg("import socket,sys\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('198.18.0.2',7000))\ns.listen()\nprint('ready',flush=True)\nfor _ in range(2):\n  c,_=s.accept()\n  c.close()")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(listener.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    let tcp_connect_ms = || -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &client, "python3", "-c"])
            .arg("import socket,time\nt=time.monotonic()\ns=socket.create_connection(('198.18.0.2',7000),timeout=10)\nprint(int((time.monotonic()-t)*1000))")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let connect_ms = tcp_connect_ms();
    assert!(
        connect_ms >= 78,
        "a TCP handshake took {connect_ms} ms through an 80 ms RTT link"
    );

    // A command it does not know is reported and ignored; a blackout darkens the link now: the
    // SYN is lost and Linux sends it again after its 1 s initial retransmission timeout.
    let mut stdin = link.stdin.take().unwrap();
    stdin
        .write_all(b"nonsense\nloss 2\nloss 0\nblackout 500\n")
        .unwrap();
    stdin.flush().unwrap();
    // Each command it carried out is confirmed once it holds.
    for want in [r#"{"loss":0.0}"#, r#"{"blackout_ms":500}"#] {
        let mut line = String::new();
        said.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), want);
    }
    let connect_ms = tcp_connect_ms();
    assert!(
        connect_ms >= 1000,
        "a TCP handshake through a 500 ms blackout took only {connect_ms} ms"
    );
    listener.wait().unwrap();

    drop(stdin); // the end of its standard input ends it
    // Its exit, waited for on a thread so that the test can give up after a deadline.
    let (exited_tx, exited) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut err = String::new();
        let _ = link.stderr.take().unwrap().read_to_string(&mut err);
        let _ = exited_tx.send((link.wait(), err));
    });
    let (status, err) = exited
        .recv_timeout(Duration::from_secs(20))
        .expect("voq netem --netns did not end with its stdin");
    assert!(status.unwrap().success(), "{err}");
    assert!(err.contains("unknown command \"nonsense\""), "{err}");
    assert!(err.contains("loss: \"2\" is not a fraction"), "{err}");
    let listed = namespaces();
    assert!(
        !listed.contains(&client) && !listed.contains(&server),
        "left behind: {listed}"
    );
}
