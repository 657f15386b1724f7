//! Attribute macros of the Sluice plugin SDK; use them through `sluice_plugin`.
//!
//! # Layout
//! - [`filter`], [`map`], [`flat_map`]: each keeps the annotated function as it is
//!   and adds, under `cfg(target_arch = "wasm32")`, a `const _` block that
//!   implements the contract's `transform` export by calling it.
//! - `expand`: the shared code generator, `Args`: the `init = path` argument.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{Error, FnArg, ItemFn, Path, Token, parse_macro_input};

/// Keep or drop each record: `fn(&Value [, &Record]) -> Result<bool>`.
/// A kept record's JSON value is written unchanged.
#[proc_macro_attribute]
pub fn filter(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Filter, attr, item)
}

/// One record in, one document out: `fn(Value [, &Record]) -> Result<T>`, where
/// `T` is a `Value`, an `Output`, or an `Option` of either (`None` drops).
#[proc_macro_attribute]
pub fn map(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Map, attr, item)
}

/// One record in, zero or more documents out: `fn(Value [, &Record]) -> Result<I>`,
/// where `I` iterates over `Value`s or `Output`s.
#[proc_macro_attribute]
pub fn flat_map(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::FlatMap, attr, item)
}

/// The record itself in, zero or more documents out: `fn(&Record) -> Result<I>`,
/// where `I` iterates over `Value`s or `Output`s. For what a value alone does not
/// tell: tombstones (`record.value` is `None`), keys, headers, bytes that are not JSON.
#[proc_macro_attribute]
pub fn process(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Process, attr, item)
}

#[derive(Clone, Copy)]
enum Kind {
    Filter,
    Map,
    FlatMap,
    Process,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Filter => "filter",
            Kind::Map => "map",
            Kind::FlatMap => "flat_map",
            Kind::Process => "process",
        }
    }
}

/// `init = path::to::fn`, optional.
struct Args {
    init: Option<Path>,
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut init = None;
        while !input.is_empty() {
            let key: syn::Ident = input.parse()?;
            if key != "init" {
                return Err(Error::new(key.span(), format!("unknown argument `{key}`; the only argument is `init = <function>`")));
            }
            input.parse::<Token![=]>()?;
            if init.is_some() {
                return Err(Error::new(key.span(), "`init` given twice"));
            }
            init = Some(input.parse()?);
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(Args { init })
    }
}

fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = parse_macro_input!(attr as Args);
    let func = parse_macro_input!(item as ItemFn);
    match generate(kind, args, &func) {
        Ok(glue) => quote!(#func #glue).into(),
        Err(e) => {
            let e = e.to_compile_error();
            quote!(#func #e).into()
        }
    }
}

fn generate(kind: Kind, args: Args, func: &ItemFn) -> syn::Result<TokenStream2> {
    let sig = &func.sig;
    if let Some(a) = &sig.asyncness {
        return Err(Error::new_spanned(a, "a plugin function cannot be async"));
    }
    if !sig.generics.params.is_empty() {
        return Err(Error::new_spanned(&sig.generics, "a plugin function cannot be generic"));
    }
    if let Some(FnArg::Receiver(r)) = sig.inputs.first() {
        return Err(Error::new_spanned(r, "a plugin function is a free function, not a method"));
    }
    let name = &sig.ident;
    let call = match sig.inputs.len() {
        1 if matches!(kind, Kind::Process) => quote!(#name(record)),
        1 => quote!(#name(value)),
        2 if !matches!(kind, Kind::Process) => quote!(#name(value, record)),
        _ => {
            let what = match kind {
                Kind::Process => "`fn(&Record) -> Result<_>`",
                Kind::Filter => "`fn(&Value) -> Result<bool>` or `fn(&Value, &Record) -> Result<bool>`",
                _ => "`fn(Value) -> Result<_>` or `fn(Value, &Record) -> Result<_>`",
            };
            return Err(Error::new_spanned(&sig.inputs, format!("#[{}] expects {what}", kind.name())));
        }
    };
    let p = quote!(::sluice_plugin::__private);
    let (runner, closure) = match kind {
        Kind::Filter => (
            quote!(#p::filter_one),
            quote!(|value: &::sluice_plugin::Value, record: &::sluice_plugin::Record| -> ::sluice_plugin::Result<bool> { #call }),
        ),
        Kind::Map => (quote!(#p::map_one), quote!(|value: ::sluice_plugin::Value, record: &::sluice_plugin::Record| #call)),
        Kind::FlatMap => (quote!(#p::flat_map_one), quote!(|value: ::sluice_plugin::Value, record: &::sluice_plugin::Record| #call)),
        Kind::Process => (quote!(#p::process_one), quote!(|record: &::sluice_plugin::Record| #call)),
    };
    let init = match &args.init {
        Some(path) => quote!(::core::option::Option::Some(#path as fn(&::sluice_plugin::Params) -> ::sluice_plugin::Result<()>)),
        None => quote!(::core::option::Option::None),
    };
    let export = syn::Ident::new("__SluicePluginExport", Span::call_site());
    Ok(quote! {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct #export;
            impl #p::Guest for #export {
                fn init(params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>)
                    -> ::core::result::Result<(), ::std::string::String> {
                    #p::run_init(params, #init)
                }
                fn process(batch: #p::WitBatch) -> #p::WitBatchResult {
                    #[allow(unused_variables)]
                    let mut f = #closure;
                    #p::process(batch, |r, w| #runner(r, &mut f, w))
                }
            }
            #p::export!(#export with_types_in #p::bindings);
        };
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen_for(kind: Kind, args: &str, f: &str) -> syn::Result<String> {
        let args: Args = syn::parse_str(args)?;
        let func: ItemFn = syn::parse_str(f)?;
        generate(kind, args, &func).map(|t| t.to_string())
    }

    #[test]
    fn glue_is_wasm_only_and_calls_the_function() {
        let out = gen_for(Kind::Map, "", "fn f(v: Value) -> Result<Value> { Ok(v) }").unwrap();
        assert!(out.starts_with("# [cfg (target_arch = \"wasm32\")]"), "{out}");
        assert!(out.contains("f (value)") && out.contains("map_one"), "{out}");
        assert!(out.contains(":: core :: option :: Option :: None"), "{out}");
        let out = gen_for(Kind::Filter, "init = setup", "fn f(v: &Value, r: &Record) -> Result<bool> { Ok(true) }").unwrap();
        assert!(out.contains("f (value , record)") && out.contains("filter_one") && out.contains("Some (setup as fn"), "{out}");
        let out = gen_for(Kind::FlatMap, "init = a::b,", "fn f(v: Value) -> Result<Vec<Value>> { Ok(vec![]) }").unwrap();
        assert!(out.contains("flat_map_one") && out.contains("a :: b as fn"), "{out}");
        let out = gen_for(Kind::Process, "", "fn f(r: &Record) -> Result<Vec<Output>> { Ok(vec![]) }").unwrap();
        assert!(out.contains("f (record)") && out.contains("process_one"), "{out}");
        let e = gen_for(Kind::Process, "", "fn f(v: Value, r: &Record) -> Result<Vec<Output>> { todo!() }").unwrap_err().to_string();
        assert!(e.contains("#[process] expects `fn(&Record) -> Result<_>`"), "{e}");
    }

    #[test]
    fn wrong_shapes_are_compile_errors_that_say_what_is_expected() {
        let e = gen_for(Kind::Map, "", "fn f() -> Result<Value> { todo!() }").unwrap_err().to_string();
        assert!(e.contains("#[map] expects"), "{e}");
        let e = gen_for(Kind::Filter, "", "fn f(a: &Value, b: &Record, c: u8) -> Result<bool> { todo!() }").unwrap_err().to_string();
        assert!(e.contains("#[filter] expects `fn(&Value) -> Result<bool>`"), "{e}");
        let e = gen_for(Kind::Map, "", "async fn f(v: Value) -> Result<Value> { Ok(v) }").unwrap_err().to_string();
        assert!(e.contains("cannot be async"), "{e}");
        let e = gen_for(Kind::Map, "", "fn f<T>(v: Value) -> Result<Value> { Ok(v) }").unwrap_err().to_string();
        assert!(e.contains("cannot be generic"), "{e}");
        assert!(syn::parse_str::<Args>("setup = x").is_err());
        assert!(syn::parse_str::<Args>("init = a, init = b").is_err());
    }
}
