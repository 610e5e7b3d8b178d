//! `natter gui`: the command line of the window client (`natter_gui`), and what connects it:
//! the form's address read as `--addr` is (`natters://` for TLS), the TLS options, and a
//! [`SessionRunner`] on the chosen runtime.

use std::process::ExitCode;
use std::str::FromStr;

use natter_gui::{Connector, GuiApp, GuiOptions, Performer, Report};
use natter_runtime_common::{ClientOptions, RunClient, SessionRunner};

use crate::cli::{ClientTlsArgs, GuiArgs, ServerAddr};
use crate::local_time::clock;

/// The test hook: a file the window appends its state to (connection, focus, input line) each
/// time it changes, so a test driving the window waits on it instead of on time.
pub const TRACE_VAR: &str = "NATTER_GUI_TRACE";

/// Makes sessions for the form's address with the command line's other options.
struct SessionConnector {
    run: RunClient,
    template: ClientOptions,
    tls: ClientTlsArgs,
}

impl Connector for SessionConnector {
    fn open(&mut self, addr: &str, report: Report) -> Result<Box<dyn Performer>, String> {
        let addr = ServerAddr::from_str(addr)?;
        let tls = crate::client_tls(&addr, self.tls.clone())?;
        let options = ClientOptions { addr: addr.addr, tls, ..self.template.clone() };
        Ok(Box::new(SessionRunner::new(self.run, options, report)))
    }
}

pub fn run(args: GuiArgs) -> ExitCode {
    let run = args.session.client_loop();
    // The address and name are replaced by the form's.
    let unset = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let template = args.session.client_options(unset, String::new(), args.downloads.clone(), None);
    let options = GuiOptions {
        connect_now: args.name.is_some(),
        addr: args.addr,
        name: args.name,
        settings: args.settings.or_else(natter_gui::settings::default_path),
        downloads: args.downloads,
        opener: "xdg-open".into(),
        trace: std::env::var_os(TRACE_VAR).map(Into::into),
        connector: Box::new(SessionConnector { run, template, tls: args.session.tls }),
        clock: Box::new(clock),
    };
    match natter_gui::run(GuiApp::new(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("natter gui: {err}");
            ExitCode::FAILURE
        }
    }
}
