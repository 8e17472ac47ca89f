//! `p2pchat web`: starts the local web app (`p2pchat_web`) and says where it is.

use std::net::IpAddr;

use p2pchat_web::{DEFAULT_PORT, WebApp, WebOptions};

use crate::args::WebArgs;

/// Serves the app until Ctrl-C; returns the exit status.
pub fn run(args: WebArgs) -> i32 {
    let Ok(bind) = args.bind.parse::<IpAddr>() else {
        eprintln!(
            "p2pchat: --bind {}: not an IP address (e.g. 127.0.0.1 or ::1)",
            args.bind
        );
        return 2;
    };
    if !bind.is_loopback() {
        eprintln!(
            "warning: --bind {bind}: other machines can reach this app; only the token in the URL keeps them out, and the page is served without TLS"
        );
    }
    let options = WebOptions {
        bind,
        port: args.port.unwrap_or(DEFAULT_PORT),
        fall_back: args.port.is_none(),
        data_dir: p2pchat_client::data_dir(),
        download_dir: args.download_dir,
    };
    smol::block_on(async {
        let app = match WebApp::bind(options).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("p2pchat: {e}");
                return 1;
            }
        };
        if let Some(port) = app.port_taken() {
            eprintln!("p2pchat: port {port} is taken; using a free one instead");
        }
        println!("{}", app.url());
        eprintln!(
            "p2pchat: open that URL in your browser; its token is the key to this app (keep it to yourself). Ctrl-C stops it."
        );
        // Files uploaded for sending are copies: removed when the app stops.
        let uploads = app.uploads().to_owned();
        let _ = ctrlc::set_handler(move || {
            let _ = std::fs::remove_dir_all(&uploads);
            std::process::exit(0);
        });
        let served = app.run().await;
        match served {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("p2pchat: the web app stopped: {e}");
                1
            }
        }
    })
}
